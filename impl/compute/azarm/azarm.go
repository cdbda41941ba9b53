// Package azarm is the real compute.Fabric: an adapter over the Azure SDK's
// armcompute/v8 (VMs, managed disks), armnetwork/v9 (virtual networks,
// peerings, network interfaces) and armresources (resource groups), with
// azidentity for credentials.
//
// # Mapping
//
// CreateGroup is ResourceGroups.CreateOrUpdate. CreateNetwork and Peer are
// VirtualNetworks.BeginCreateOrUpdate and VirtualNetworkPeerings (one each
// way), polled until done every Config.PollFrequency. Network is
// VirtualNetworks.Get; a subnet's IP table comes from the network
// interfaces listed in the fabric's groups (a NIC in the subnet but outside
// those groups is not seen). The Begin calls are the SDK's Begin calls:
// Interfaces.BeginCreateOrUpdate (static or dynamic private IP; the
// network is read first, so that a missing network or subnet is
// ErrNotFound rather than ARM's 400 InvalidResourceReference, as Peer
// does for its two networks), Disks.BeginCreateOrUpdate with CreateOption
// Import from a page blob of Config.StorageAccountID (the disk's size is
// the blob's; DiskSpec.SizeBytes is not sent),
// VirtualMachines.BeginCreateOrUpdate with the
// disks attached (CreateOption Attach) and the NICs in order (the first
// primary), BeginStart, BeginDeallocate and BeginDelete. VM is
// VirtualMachines.Get with its instance view. ReadDisk grants read access
// to the disk (a SAS URL), reads the range from the export with one ranged
// GET through the same transport, and ends the access. Inventory lists
// each resource type in each group of the scope.
//
// # Pending tokens
//
// A compute.Pending is "<op>:<the SDK poller's ResumeToken>", the op
// naming the client and method to resume with ("vm-create", "nic-delete",
// ...). Poll resumes the poller from it, polls once, and reports Done with
// the operation's failure, if any, as a *compute.Error. An operation that
// was already finished when Begin returned (ARM answered 200 at once) gets
// the token "done:<op>". Tokens are plain strings: an orchestrator that
// restarts can keep polling them with a new Fabric.
//
// # Errors
//
// Every *azcore.ResponseError becomes a *compute.Error with the HTTP
// status, Azure's error code and message (and Retry-After for a 429), so
// errors.Is matches the compute.Err* sentinels: a 404 is
// compute.ErrNotFound. Throttling (429) and transient 5xx are first
// retried by the SDK's retry policy (Config.ClientOptions.Retry). Creating
// a resource whose name is taken gives compute.ErrExists (409
// ResourceExists): ARM's PUT would update it, so each create first reads
// the name (a race with another client remains).
//
// # Scope
//
// A Fabric works in Config.Groups, or in the whole subscription when that
// is empty (the conformance suite names a group per subtest). A group
// outside the scope is refused with ErrInvalid before anything is sent.
//
// # Tests
//
// impl/compute/azarm/armfake is a stateful fake of the ARM calls above,
// built on the SDKs' own fake servers; the package's tests and
// computetest.Run run against it with no network.
//
// # Using a real subscription
//
//	cfg, err := azarm.ConfigFromEnv(os.Getenv)
//	...
//	fabric, err := azarm.New(cfg)
//
// ConfigFromEnv reads:
//
//	AZURE_SUBSCRIPTION_ID     the subscription (required)
//	AZURE_LOCATION            the region, e.g. "westeurope" (required)
//	AZURE_RESOURCE_GROUP      the resource groups in scope, comma-separated
//	                          (unset: the whole subscription)
//	AZURE_STORAGE_ACCOUNT_ID  the ARM id of the storage account whose page
//	                          blobs disks are imported from (required for
//	                          BeginCreateDisk)
//	AZURE_BLOB_ENDPOINT       that account's blob endpoint (default
//	                          https://<account>.blob.core.windows.net/)
//
// and New's default credential is azidentity.NewDefaultAzureCredential,
// which reads AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or a
// workload identity, a managed identity, or `az login`). The identity needs
// Contributor on the resource groups and "Storage Blob Data Reader" (or
// the account key role) on the storage account. An imported disk must be a
// fixed VHD: N MiB of data plus a 512-byte footer.
//
// ReadDisk needs the disk unattached or its VM deallocated: Azure refuses
// to export a disk in use (409), and this adapter does not hide that.
// GuestStatus is the VM agent's status ("Ready"); whether the guest's
// application recovered is not something ARM reports.
//
// As a port adapter it may use the SDK's goroutines, clock and retries.
package azarm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources"

	"github.com/v2a-dr/v2a/impl/compute"
)

// Config says which subscription, region and resource groups a Fabric
// works in, and how it talks to ARM.
type Config struct {
	SubscriptionID string
	// Location is the Azure region new resources are created in.
	Location string
	// Groups are the resource groups in scope: CreateGroup creates only
	// these, Inventory lists only these. Names compare case-insensitively,
	// as Azure's do. Empty means the whole subscription: any group may be
	// used, and Inventory lists every group (slow on a busy subscription).
	Groups []string
	// StorageAccountID is the ARM id of the storage account holding the
	// page blobs that BeginCreateDisk imports.
	StorageAccountID string
	// BlobEndpoint is that account's blob endpoint, ending in "/"; empty
	// means https://<account>.blob.core.windows.net/.
	BlobEndpoint string
	// DiskSKU is the managed disks' SKU; empty means StandardSSD_LRS.
	DiskSKU armcompute.DiskStorageAccountTypes
	// Credential authenticates to ARM; nil means
	// azidentity.NewDefaultAzureCredential.
	Credential azcore.TokenCredential
	// ClientOptions configures every client: the transport (tests put the
	// SDK fakes here), retries, the cloud.
	ClientOptions *arm.ClientOptions
	// PollFrequency is how often the synchronous calls (CreateNetwork,
	// Peer, ReadDisk) poll a long-running operation, and the Result.After
	// that Poll suggests when ARM gives no Retry-After. Zero means 10 s.
	PollFrequency time.Duration
}

// DefaultPollFrequency is Config.PollFrequency's default.
const DefaultPollFrequency = 10 * time.Second

// ErrConfig is a Config that cannot work.
var ErrConfig = errors.New("azarm: bad config")

// ConfigFromEnv builds a Config from the environment variables the package
// doc lists, read with getenv (os.Getenv in production).
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{
		SubscriptionID:   getenv("AZURE_SUBSCRIPTION_ID"),
		Location:         getenv("AZURE_LOCATION"),
		StorageAccountID: getenv("AZURE_STORAGE_ACCOUNT_ID"),
		BlobEndpoint:     getenv("AZURE_BLOB_ENDPOINT"),
	}
	for g := range strings.SplitSeq(getenv("AZURE_RESOURCE_GROUP"), ",") {
		if g = strings.TrimSpace(g); g != "" {
			cfg.Groups = append(cfg.Groups, g)
		}
	}
	var missing []string
	for _, v := range []struct{ name, val string }{
		{"AZURE_SUBSCRIPTION_ID", cfg.SubscriptionID},
		{"AZURE_LOCATION", cfg.Location},
	} {
		if v.val == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("%w: %s not set", ErrConfig, strings.Join(missing, ", "))
	}
	return cfg, nil
}

// Fabric is a compute.Fabric on one subscription, scoped to Config.Groups.
// It is safe for concurrent use (the SDK clients are).
type Fabric struct {
	cfg      Config
	poll     time.Duration
	scope    map[string]string // lower-cased group name -> configured spelling
	blobBase string            // blob endpoint, ending in "/"

	groups   *armresources.ResourceGroupsClient
	vnets    *armnetwork.VirtualNetworksClient
	peerings *armnetwork.VirtualNetworkPeeringsClient
	nics     *armnetwork.InterfacesClient
	disks    *armcompute.DisksClient
	vms      *armcompute.VirtualMachinesClient
	// export reads a disk's export (a SAS URL): the configured transport
	// and retries, no bearer token.
	export runtime.Pipeline
}

var _ compute.Fabric = (*Fabric)(nil)

// New checks cfg and makes the clients. Nothing is sent until the first
// call.
func New(cfg Config) (*Fabric, error) {
	if cfg.SubscriptionID == "" || cfg.Location == "" {
		return nil, fmt.Errorf("%w: SubscriptionID and Location are required", ErrConfig)
	}
	f := &Fabric{cfg: cfg, poll: cfg.PollFrequency, scope: map[string]string{}}
	if f.poll <= 0 {
		f.poll = DefaultPollFrequency
	}
	for _, g := range cfg.Groups {
		if g == "" {
			return nil, fmt.Errorf("%w: empty resource group name", ErrConfig)
		}
		f.scope[strings.ToLower(g)] = g
	}
	f.blobBase = cfg.BlobEndpoint
	if cfg.StorageAccountID != "" {
		id, err := arm.ParseResourceID(cfg.StorageAccountID)
		if err != nil || !strings.EqualFold(id.ResourceType.String(), "Microsoft.Storage/storageAccounts") {
			return nil, fmt.Errorf("%w: StorageAccountID %q is not a storage account id", ErrConfig, cfg.StorageAccountID)
		}
		if f.blobBase == "" {
			f.blobBase = "https://" + id.Name + ".blob.core.windows.net/"
		}
	}
	if f.blobBase != "" && !strings.HasSuffix(f.blobBase, "/") {
		f.blobBase += "/"
	}
	if f.cfg.DiskSKU == "" {
		f.cfg.DiskSKU = armcompute.DiskStorageAccountTypesStandardSSDLRS
	}
	cred := cfg.Credential
	if cred == nil {
		c, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azarm: default credential: %w", err)
		}
		cred = c
	}
	opts := cfg.ClientOptions
	if opts == nil {
		opts = &arm.ClientOptions{}
	}
	var err error
	if f.groups, err = armresources.NewResourceGroupsClient(cfg.SubscriptionID, cred, opts); err != nil {
		return nil, fmt.Errorf("azarm: resource groups client: %w", err)
	}
	net, err := armnetwork.NewClientFactory(cfg.SubscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azarm: network clients: %w", err)
	}
	f.vnets, f.peerings, f.nics = net.NewVirtualNetworksClient(), net.NewVirtualNetworkPeeringsClient(), net.NewInterfacesClient()
	cmp, err := armcompute.NewClientFactory(cfg.SubscriptionID, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azarm: compute clients: %w", err)
	}
	f.disks, f.vms = cmp.NewDisksClient(), cmp.NewVirtualMachinesClient()
	co := opts.ClientOptions
	f.export = runtime.NewPipeline("azarm", "v1", runtime.PipelineOptions{}, &co)
	return f, nil
}

// group returns the configured spelling of a group in scope.
func (f *Fabric) group(name string) (string, error) {
	if name == "" {
		return "", invalid("no resource group named")
	}
	if len(f.scope) == 0 {
		return name, nil // the whole subscription
	}
	if g, ok := f.scope[strings.ToLower(name)]; ok {
		return g, nil
	}
	return "", &compute.Error{Status: http.StatusBadRequest, Code: compute.CodeInvalid,
		Message: fmt.Sprintf("resource group %q is outside the fabric's scope %v", name, f.cfg.Groups)}
}

// sortedScope is the groups in scope in name order: the configured ones
// (existing or not), or every group of the subscription.
func (f *Fabric) sortedScope(ctx context.Context) ([]string, error) {
	gs := slices.Clone(f.cfg.Groups)
	if len(gs) == 0 {
		p := f.groups.NewListPager(nil)
		for p.More() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, f.fail(err, "list resource groups")
			}
			for _, g := range page.Value {
				if g != nil && g.Name != nil {
					gs = append(gs, *g.Name)
				}
			}
		}
	}
	slices.Sort(gs)
	return slices.Compact(gs), nil
}

// CreateGroup creates a resource group in scope (an existing one is left as
// it is: ARM's PUT of a group is idempotent).
func (f *Fabric) CreateGroup(ctx context.Context, name string) error {
	g, err := f.group(name)
	if err != nil {
		return err
	}
	_, err = f.groups.CreateOrUpdate(ctx, g, armresources.ResourceGroup{Location: to.Ptr(f.cfg.Location)}, nil)
	return f.fail(err, "create group %s", g)
}

// CreateNetwork creates a virtual network and polls it until done.
func (f *Fabric) CreateNetwork(ctx context.Context, spec compute.NetworkSpec) error {
	g, err := f.group(spec.Group)
	if err != nil {
		return err
	}
	ref := compute.Ref{Kind: compute.KindNetwork, Group: g, Name: spec.Name}
	if err := checkName(ref); err != nil {
		return err
	}
	if !spec.AddressSpace.IsValid() {
		return invalid("network %s: no address space", ref)
	}
	vnet := armnetwork.VirtualNetwork{
		Location: to.Ptr(f.cfg.Location),
		Properties: &armnetwork.VirtualNetworkPropertiesFormat{
			AddressSpace: &armnetwork.AddressSpace{AddressPrefixes: []*string{to.Ptr(spec.AddressSpace.String())}},
		},
	}
	for _, s := range spec.Subnets {
		if s.Name == "" || !s.Prefix.IsValid() {
			return invalid("network %s: subnet %q needs a name and a prefix", ref, s.Name)
		}
		vnet.Properties.Subnets = append(vnet.Properties.Subnets, &armnetwork.Subnet{
			Name:       to.Ptr(s.Name),
			Properties: &armnetwork.SubnetPropertiesFormat{AddressPrefix: to.Ptr(s.Prefix.String())},
		})
	}
	if err := f.absent(ctx, ref); err != nil {
		return err
	}
	p, err := f.vnets.BeginCreateOrUpdate(ctx, g, spec.Name, vnet, nil)
	if err != nil {
		return f.fail(err, "create network %s", ref)
	}
	_, err = p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: f.poll})
	return f.fail(err, "create network %s", ref)
}

// Peer peers a with b and b with a; each peering is polled until done.
func (f *Fabric) Peer(ctx context.Context, a, b compute.Ref) error {
	if a.Kind != compute.KindNetwork || b.Kind != compute.KindNetwork {
		return invalid("peer %s with %s: both must be networks", a, b)
	}
	var err error
	if a.Group, err = f.group(a.Group); err != nil {
		return err
	}
	if b.Group, err = f.group(b.Group); err != nil {
		return err
	}
	if a.Compare(b) == 0 {
		return invalid("peer %s with itself", a)
	}
	// ARM answers a missing remote network with 400; read both first so
	// that a missing one is ErrNotFound.
	for _, r := range []compute.Ref{a, b} {
		if _, err := f.vnets.Get(ctx, r.Group, r.Name, nil); err != nil {
			return f.fail(err, "network %s", r)
		}
	}
	for _, ends := range [][2]compute.Ref{{a, b}, {b, a}} {
		from, to_ := ends[0], ends[1]
		p, err := f.peerings.BeginCreateOrUpdate(ctx, from.Group, from.Name, peeringName(to_),
			armnetwork.VirtualNetworkPeering{Properties: &armnetwork.VirtualNetworkPeeringPropertiesFormat{
				RemoteVirtualNetwork:      &armnetwork.SubResource{ID: to.Ptr(f.id(to_))},
				AllowVirtualNetworkAccess: to.Ptr(true),
			}}, nil)
		if err != nil {
			return f.fail(err, "peer %s with %s", from, to_)
		}
		if _, err := p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: f.poll}); err != nil {
			return f.fail(err, "peer %s with %s", from, to_)
		}
	}
	return nil
}

// peeringName names the peering from a network to remote.
func peeringName(remote compute.Ref) string {
	return "peer-" + remote.Group + "-" + remote.Name
}

// Network reads a network and fills its subnets' IP tables from the NICs in
// scope.
func (f *Fabric) Network(ctx context.Context, ref compute.Ref) (compute.Network, error) {
	if ref.Kind != compute.KindNetwork {
		return compute.Network{}, invalid("%s is not a network", ref)
	}
	g, err := f.group(ref.Group)
	if err != nil {
		return compute.Network{}, err
	}
	resp, err := f.vnets.Get(ctx, g, ref.Name, nil)
	if err != nil {
		return compute.Network{}, f.fail(err, "network %s", ref)
	}
	nics, err := f.listNICs(ctx)
	if err != nil {
		return compute.Network{}, err
	}
	return f.toNetwork(resp.VirtualNetwork, nics)
}

// absent gives ErrExists when ref's name is taken.
func (f *Fabric) absent(ctx context.Context, ref compute.Ref) error {
	var err error
	switch ref.Kind {
	case compute.KindNetwork:
		_, err = f.vnets.Get(ctx, ref.Group, ref.Name, nil)
	case compute.KindNIC:
		_, err = f.nics.Get(ctx, ref.Group, ref.Name, nil)
	case compute.KindDisk:
		_, err = f.disks.Get(ctx, ref.Group, ref.Name, nil)
	case compute.KindVM:
		_, err = f.vms.Get(ctx, ref.Group, ref.Name, nil)
	default:
		return invalid("unknown resource kind in %s", ref)
	}
	if err == nil {
		return &compute.Error{Status: http.StatusConflict, Code: compute.CodeExists,
			Message: fmt.Sprintf("%s already exists", ref)}
	}
	if e := asError(err); errors.Is(e, compute.ErrNotFound) {
		return nil
	}
	return f.fail(err, "read %s", ref)
}

// checkName refuses a ref with no name.
func checkName(ref compute.Ref) error {
	if ref.Name == "" || strings.ContainsAny(ref.Name, "/?#") {
		return invalid("%s: bad resource name %q", ref, ref.Name)
	}
	return nil
}

// fail turns an SDK error into the port's: a response error becomes a
// *compute.Error as it is; anything else (a transport failure, a
// cancelled context) is wrapped with what was being done.
func (f *Fabric) fail(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if e := asError(err); e != err {
		return e
	}
	return fmt.Errorf("azarm: %s: %w", fmt.Sprintf(format, args...), err)
}

func invalid(format string, args ...any) error {
	return &compute.Error{Status: http.StatusBadRequest, Code: compute.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// prefix parses an address prefix Azure returned.
func prefix(s *string) netip.Prefix {
	if s == nil {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(*s)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}
