def data():
    return None
