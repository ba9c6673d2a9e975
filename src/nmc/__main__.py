from nmc.cli import main

main()
