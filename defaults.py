DEFAULTS = {'budget': 5}

def train(hp, run):
    pass
