package harness

func stopSharedStorage() {}
