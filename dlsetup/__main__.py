from dlsetup.cli import main

main()
