from daad.cli import main; main()
