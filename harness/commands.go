package harness

import (
	"fmt"
	"strings"
)

// Command is one script command: the one table the dispatcher, the
// argument check, `v2a help` and the README's command table all read. A
// command is added here and nowhere else.
type Command struct {
	Name string
	// Keys are the keys it takes (bare words like `trace hash` too). A key
	// it does not list is an error: a typo must not silently turn into a
	// default. fault's keys depend on the fault: see faultKeys.
	Keys    []string
	Usage   string // the arguments, as the help prints them
	Summary string // what it does
	Example string // one line as a script writes it
	// Failover marks a command that acts on failover (or only shows it):
	// the non-interference check's control run leaves it out and only
	// lets the virtual time it took pass.
	Failover bool
	run      func(r *Runner, a argMap) (string, error)
}

// commands is every script command, in the order errors and help name
// them.
var commands = []Command{
	{Name: "world", Keys: []string{"seed", "target", "inventory", "machines", "allocated", "workload", "tx", "churn", "region"},
		Usage:   "[seed=N] [target=PATH] [inventory=NAME] [machines=(a,b)] [allocated=MiB] [workload=bank|fs|random|idle] [tx=N] [churn=BYTES] [region=BYTES]",
		Summary: "build the world: vcsim from the inventory, guest disks (`allocated`: MiB of guest data on each, default an eighth), network, workloads (`tx`: bank transactions or fs operations a second; `region`: bytes they own from 32 MiB, default to the disk's end); first, and once",
		Example: "world seed=7 machines=(db01,web01) workload=bank",
		run:     (*Runner).world},
	{Name: "run", Keys: []string{"for"},
		Usage: "for=DURATION", Summary: "advance virtual time", Example: "run for=2h",
		run: (*Runner).run},
	{Name: "write", Keys: []string{"vm", "disk", "off", "len", "byte"},
		Usage: "vm=NAME off=BYTES [disk=N] [len=BYTES] [byte=0xNN]", Summary: "a scripted guest write", Example: "write vm=db01 off=4096 len=512",
		run: (*Runner).write},
	{Name: "workload", Keys: []string{"kind", "machines", "tx", "churn", "region"},
		Usage: "kind=bank|fs|random|idle [machines=(…)] [tx=N] [churn=BYTES] [region=BYTES]", Summary: "start a workload", Example: "workload kind=fs machines=(web01)",
		run: (*Runner).workload},
	{Name: "trace", Keys: []string{"grep", "last", "hash", "storage"},
		Usage: "[grep=S] [last=N] | hash | storage", Summary: "trace lines since the last `trace`, the trace's hash, blob-storage request counts", Example: "trace grep=alert last=5",
		run: (*Runner).trace},
	{Name: "check", Keys: []string{"what", "vms", "group", "limit", "bound", "verbose"},
		Usage:   "[what=(" + strings.Join(checkNames, ",") + ")] [vms=(…)] [group=(…)] [limit=DURATION] [bound=DURATION] [verbose]",
		Summary: "property checks, counted in the closing line (default: disks, invariants)", Example: "check what=(points,schedule,rpo)",
		run: (*Runner).check},
	{Name: "fault", Keys: nil,
		Usage:   "KIND [key=value…] [on=EVENT onhost=H] [unfired=ok]",
		Summary: "inject one fault (KIND: " + strings.Join(faultNames, ", ") + "); `on=` arms it to fire right after an event (corrupt-blob is always armed, on the machine's next upload); an armed fault that fires but cannot be injected fails the run, and so does one that never fires by the script's end unless armed with `unfired=ok`",
		Example: "fault crash host=ord-db on=group-tag",
		run:     (*Runner).fault},
	{Name: "network", Keys: []string{},
		Usage: "", Summary: "the network: hosts, links, VPN", Example: "network",
		run: func(r *Runner, _ argMap) (string, error) { return r.network() }},
	{Name: "deploy", Keys: []string{"passphrase", "cache", "agent-data", "agent-meta", "drain", "cs-db"},
		Usage: "[passphrase=S] [cache=BYTES] [drain=60s] [agent-data=BYTES] [agent-meta=BYTES] [cs-db=sqlite|memory]", Summary: "start the configuration server, process server and Azure side", Example: "deploy",
		run: (*Runner).deploy},
	{Name: "policy", Keys: []string{"name", "rpo", "retention", "crash", "app", "compression"},
		Usage: "name=N [rpo=] [retention=] [crash=] [app=] [compression=s2|zstd]", Summary: "create a replication policy", Example: "policy name=gold crash=5m app=1h",
		run: (*Runner).policy},
	{Name: "policies", Keys: []string{},
		Usage: "", Summary: "the replication policies, each with its failback policy (`<name>-failback`: made with it, fixed, for reprotect only)", Example: "policies",
		run: func(r *Runner, _ argMap) (string, error) { return r.policies() }},
	{Name: "protect", Keys: []string{"vms", "policy", "passphrase"},
		Usage: "vms=(…) [policy=N] [passphrase=S]", Summary: "enable replication (push install of the agent)", Example: "protect vms=(db01,web01)",
		run: (*Runner).protect},
	{Name: "install", Keys: []string{"vm", "passphrase"},
		Usage: "vm=NAME [passphrase=S]", Summary: "install an agent by hand (a physical server)", Example: "install vm=phys01",
		run: (*Runner).install},
	{Name: "wait", Keys: []string{"state", "vms", "timeout"},
		Usage: "[state=protected] [vms=(…)] [timeout=2h]", Summary: "run until machines reach a state", Example: "wait state=protected vms=(db01)",
		run: (*Runner).wait},
	{Name: "status", Keys: []string{},
		Usage:   "",
		Summary: "the portal's per-VM table: `written` is what the guest wrote, `sent` the payload its agent sent, `ratio` the true compression of its items, `codec` its policy's",
		Example: "status",
		run:     (*Runner).status},
	{Name: "points", Keys: []string{"vm", "last", "point"},
		Usage: "vm=NAME [last=N] [point=ID]", Summary: "a machine's recovery points, or one point and what became of it", Example: "points vm=db01 last=4",
		run: (*Runner).points},
	{Name: "cost", Keys: []string{"for", "vms"},
		Usage: "for=DURATION [vms=(…)]", Summary: "run the world and report what protection costs: points made an hour and kept, RPO p50/p99/max (sampled each second), blob-storage transactions an hour", Example: "cost for=10m",
		run: (*Runner).cost},
	{Name: "alerts", Keys: []string{},
		Usage: "", Summary: "the configuration server's alerts", Example: "alerts",
		run: (*Runner).alerts},
	{Name: "jobs", Keys: []string{"vm"},
		Usage: "[vm=NAME]", Summary: "the configuration server's jobs", Example: "jobs vm=db01",
		run: (*Runner).jobs},
	{Name: "agent", Keys: []string{"vm"},
		Usage: "vm=NAME", Summary: "a machine's agent as it sees itself", Example: "agent vm=db01",
		run: (*Runner).agentCmd},
	{Name: "protect-group", Keys: []string{"group", "vms", "policy", "master"},
		Usage: "group=G vms=(…) [policy=N] [master=VM]", Summary: "enable a multi-VM replication group", Example: "protect-group group=orders vms=(ord-db,ord-web,ord-report)",
		run: (*Runner).protectGroup},
	{Name: "orders", Keys: []string{"group", "db", "web", "report", "rate"},
		Usage: "db=VM web=VM report=VM [group=orders] [rate=N]", Summary: "start the cross-VM order flow", Example: "orders db=ord-db web=ord-web report=ord-report",
		run: (*Runner).ordersCmd},
	{Name: "group-points", Keys: []string{"group", "last"},
		Usage: "group=G [last=N]", Summary: "a group's recovery points", Example: "group-points group=orders",
		run: (*Runner).groupPoints},
	{Name: "groups", Keys: []string{"detail"},
		Usage: "[detail=rounds]", Summary: "replication groups: points, rounds, revokes and why, write holds; `detail=rounds` adds each recent round's phases and holds", Example: "groups detail=rounds",
		run: (*Runner).groups},
	{Name: "power", Keys: []string{"vm", "state"},
		Usage: "vm=NAME state=on|off", Summary: "vSphere power", Example: "power vm=web01 state=off",
		run: (*Runner).power},
	{Name: "azure-network", Keys: []string{"name", "cidr", "subnets", "production", "peer"}, Failover: true,
		Usage:   "name=N cidr=PREFIX subnets=(NAME:PREFIX,…) [production] [peer=(N2,…)]",
		Summary: "a virtual network in Azure's recovery resource group; `production` is where failovers land, any other is isolated unless peered",
		Example: "azure-network name=prod cidr=10.0.0.0/16 subnets=(app:10.0.1.0/24,db:10.0.2.0/24) production",
		run:     (*Runner).azureNetwork},
	{Name: "target", Keys: []string{"vm", "subnet", "ip", "size", "os", "hydrate"}, Failover: true,
		Usage:   "vm=NAME subnet=S [ip=A] [size=SIZE] [os=linux|windows] [hydrate]",
		Summary: "a machine's failover settings (Compute & Network): subnet and private IP in the production network; `hydrate` for Linux and physical sources",
		Example: "target vm=db01 subnet=db ip=10.0.2.10",
		run:     (*Runner).target},
	{Name: "plan", Keys: append([]string{"name"}, planGroupKeys...), Failover: true,
		Usage:   "name=P group1=(vm,…) [group2=(…) …]",
		Summary: "a recovery plan: boot groups in order, the VMs of a group in parallel",
		Example: "plan name=erp group1=(ord-db) group2=(ord-web,ord-report)",
		run:     (*Runner).plan},
	{Name: "plan-action", Keys: []string{"plan", "group", "when", "name", "manual", "runbook", "types", "directions"}, Failover: true,
		Usage:   "plan=P group=N when=pre|post name=A (manual | runbook=R) [types=(test-failover,failover)] [directions=(primary-to-recovery)]",
		Summary: "an action before or after a plan's group: a runbook, or a manual step the job waits on (`ack`)",
		Example: "plan-action plan=erp group=2 when=pre name=dns runbook=update-dns types=(failover)",
		run:     (*Runner).planAction},
	{Name: "runbook", Keys: []string{"name", "fail"}, Failover: true,
		Usage: "name=R [fail=N]", Summary: "make a plan's runbook fail its next N runs", Example: "runbook name=update-dns fail=1",
		run: (*Runner).runbook},
	{Name: "azure-fault", Keys: []string{"kind", "match", "count", "retry-after", "op"}, Failover: true,
		Usage:   "kind=quota|nic|hydration|throttle [match=GLOB] [count=N] [retry-after=DURATION] [op=create-vm|create-nic|create-disk]",
		Summary: "a fault in the simulated Azure fabric: VM create refused (28031), NIC create (28092), hydration (170010), throttling (429)",
		Example: "azure-fault kind=quota match=web01*",
		run:     (*Runner).azureFault},
	{Name: "test-failover", Keys: []string{"vms", "plan", "point", "id", "network", "wait"}, Failover: true,
		Usage:   "(vms=(…) | plan=P) point=KIND [id=ID] network=N [wait=2h]",
		Summary: "a test failover into an isolated network; replication goes on (KIND: latest-processed, latest, latest-app, latest-multivm, latest-multivm-app, custom)",
		Example: "test-failover plan=erp point=latest-multivm-app network=drill",
		run:     (*Runner).testFailover},
	{Name: "cleanup", Keys: []string{"vms", "plan", "wait"}, Failover: true,
		Usage: "(vms=(…) | plan=P) [wait=2h]", Summary: "clean up a test failover: delete exactly what it made", Example: "cleanup plan=erp",
		run: (*Runner).cleanup},
	{Name: "failover", Keys: []string{"vms", "plan", "point", "id", "shutdown", "wait"}, Failover: true,
		Usage:   "(vms=(…) | plan=P) point=KIND [id=ID] [shutdown] [wait=2h]",
		Summary: "an unplanned failover into the production network; replication of those VMs stops first; `shutdown` powers the sources off (it goes on if that fails)",
		Example: "failover plan=erp point=latest shutdown",
		run:     (*Runner).failoverCmd},
	{Name: "change-point", Keys: []string{"vms", "plan", "point", "id", "wait"}, Failover: true,
		Usage: "(vms=(…) | plan=P) point=KIND [id=ID] [wait=2h]", Summary: "move failed-over VMs to another recovery point (until commit)", Example: "change-point vms=(db01) point=latest-app",
		run: (*Runner).changePoint},
	{Name: "commit", Keys: []string{"vms", "plan", "wait"}, Failover: true,
		Usage: "(vms=(…) | plan=P) [wait=2h]", Summary: "commit a failover (every other recovery point is deleted) or a failback (the Azure VMs and their NICs and disks are deleted)", Example: "commit plan=erp",
		run: (*Runner).commit},
	{Name: "ack", Keys: []string{"job", "wait"}, Failover: true,
		Usage: "job=ID [wait=2h]", Summary: "acknowledge the manual action a job waits on", Example: "ack job=job-3",
		run: jobAction("ack")},
	{Name: "resume", Keys: []string{"job", "wait"}, Failover: true,
		Usage: "job=ID [wait=2h]", Summary: "resume a failed job at its failed step (finished steps are not redone)", Example: "resume job=job-3",
		run: jobAction("resume")},
	{Name: "skip", Keys: []string{"job", "wait"}, Failover: true,
		Usage: "job=ID [wait=2h]", Summary: "skip a job's failed action and go on", Example: "skip job=job-3",
		run: jobAction("skip")},
	{Name: "failover-jobs", Keys: []string{"job"}, Failover: true,
		Usage: "[job=ID]", Summary: "failover jobs, or one job's tasks with their times, errors and RTO", Example: "failover-jobs job=job-1",
		run: (*Runner).failoverJobs},
	{Name: "fabric", Keys: []string{}, Failover: true,
		Usage: "", Summary: "the Azure fabric: networks with their IP tables, NICs, disks, VMs and their guests' health", Example: "fabric",
		run: (*Runner).fabricView},
	{Name: "vpn", Keys: []string{"state"}, Failover: true,
		Usage: "state=up|down|absent", Summary: "the site-to-site VPN between the Azure network and on-premises: failback needs it, forward replication must not", Example: "vpn state=up",
		run: (*Runner).vpn},
	{Name: "failback-infra", Keys: []string{"mt", "public"}, Failover: true,
		Usage:   "[mt=HOST] [public]",
		Summary: "the failback infrastructure: a process server VM in the production network (`public`: on a public endpoint, a misconfiguration the path check catches) and the master target on premises (default on the configuration server)",
		Example: "failback-infra mt=cs01",
		run:     (*Runner).failbackInfra},
	{Name: "azure-workload", Keys: []string{"vms", "churn", "at", "len", "stop"}, Failover: true,
		Usage: "vms=(…) [churn=BYTES] [at=BYTES len=BYTES] [stop]", Summary: "the failed-over VMs' guests change data in Azure (random writes to [at, +len) of disk 0; by default their files, below the application's region)", Example: "azure-workload vms=(db01) churn=16384",
		run: (*Runner).azureWorkloadCmd},
	{Name: "reprotect", Keys: []string{"vms", "location", "host", "datastore", "wait"}, Failover: true,
		Usage:   "vms=(…) [location=original|alternate] [host=ESX] [datastore=DS] [wait=6h]",
		Summary: "reprotect failed-over VMs to on-premises over the VPN: original location sends only the blocks that differ, alternate makes new VMs and copies everything; waits until protected",
		Example: "reprotect vms=(db01,web01) location=original",
		run:     (*Runner).reprotectCmd},
	{Name: "failback", Keys: []string{"vms", "plan", "point", "wait"}, Failover: true,
		Usage:   "(vms=(…) | plan=P) point=latest|latest-app [wait=2h]",
		Summary: "fail back to on-premises from failback points: the Azure VMs shut down, the on-premises VMs power on (a group's members on their common app-consistent point with latest-app)",
		Example: "failback vms=(db01) point=latest",
		run:     (*Runner).failbackCmd},
	{Name: "reprotect-azure", Keys: []string{"vms", "wait"}, Failover: true,
		Usage: "vms=(…) [wait=6h]", Summary: "protect failed-back VMs to Azure again: a new sync that sends only the blocks that differ from the Azure replica", Example: "reprotect-azure vms=(db01)",
		run: (*Runner).reprotectAzureCmd},
	{Name: "delete-vm", Keys: []string{"vm"}, Failover: true,
		Usage: "vm=NAME", Summary: "destroy a VM in the simulated vCenter (a site that lost it; reprotect must then use the alternate location)", Example: "delete-vm vm=web01",
		run: (*Runner).deleteVM},
	{Name: "failback-status", Keys: []string{}, Failover: true,
		Usage: "", Summary: "the VPN's bytes each way, the process server in Azure, the master target, and each failed-over VM's changes and reprotect", Example: "failback-status",
		run: (*Runner).failbackView},
}

// Commands lists the script commands' names, for errors and help.
var Commands = func() []string {
	var out []string
	for _, c := range commands {
		out = append(out, c.Name)
	}
	return out
}()

// commandKeys is every command's keys, from the table.
var commandKeys = func() map[string][]string {
	m := map[string][]string{}
	for _, c := range commands {
		m[c.Name] = c.Keys
	}
	return m
}()

// commandNamed is a command's table entry.
func commandNamed(name string) (Command, bool) {
	for _, c := range commands {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// CommandTable is the command table: the text `v2a help` prints, or
// (markdown) the README's table.
func CommandTable(markdown bool) string {
	var b strings.Builder
	if markdown {
		b.WriteString("| command | what it does | example |\n| --- | --- | --- |\n")
	}
	for _, c := range commands {
		syn := strings.TrimSpace(c.Name + " " + c.Usage)
		if markdown {
			fmt.Fprintf(&b, "| `%s` | %s | `%s` |\n", strings.ReplaceAll(syn, "|", `\|`), strings.ReplaceAll(c.Summary, "|", `\|`), strings.ReplaceAll(c.Example, "|", `\|`))
			continue
		}
		fmt.Fprintf(&b, "%s\n    %s\n    e.g. %s\n", syn, c.Summary, c.Example)
	}
	if markdown {
		b.WriteString("\nFaults (`fault KIND`), each with its keys besides `on=`, `onhost=` and `unfired=`:\n\n| fault | keys |\n| --- | --- |\n")
	} else {
		b.WriteString("\nfaults (fault KIND), each with its keys besides on=, onhost= and unfired=:\n")
	}
	for _, f := range faultNames {
		keys := keyList(faultKeys[f])
		if markdown {
			fmt.Fprintf(&b, "| `%s` | %s |\n", f, keys)
			continue
		}
		fmt.Fprintf(&b, "  %-16s %s\n", f, keys)
	}
	return b.String()
}
