from bstune.cli import main

main()
