from openpfi.cli import main

main()
