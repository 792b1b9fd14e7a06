from services.monitoring.service import main

main()
