from ccf.cli import main

main()
