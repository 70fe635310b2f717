from sesame.cli import main

main()
