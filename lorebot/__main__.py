from lorebot.cli import main

main()
