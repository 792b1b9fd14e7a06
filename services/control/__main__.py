from services.control.service import main

main()
