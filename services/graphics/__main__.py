from services.graphics.service import main

main()
