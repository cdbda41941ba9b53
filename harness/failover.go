package harness

// Hosts of the failover actors in the simulated world (both in Azure).
const (
	// HostRecovery runs the failover orchestrator: Site Recovery's
	// recovery service in the vault.
	HostRecovery = "recovery"
	// HostFabric is the Azure Resource Manager endpoint the compute port
	// talks to.
	HostFabric = "management.azure"
)
