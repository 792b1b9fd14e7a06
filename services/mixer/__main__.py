from services.mixer.service import main

main()
