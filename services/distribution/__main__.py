from services.distribution.service import main

main()
