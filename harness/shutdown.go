package harness

// Shutdown stops what the harness shares across worlds in one process (the
// Azurite it started). Tests call it from TestMain, the CLI before exiting.
func Shutdown() {
	stopSharedStorage()
}
