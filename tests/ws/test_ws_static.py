import wsclient; wsclient.main()
