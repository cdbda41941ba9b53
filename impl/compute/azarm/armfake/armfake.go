// Package armfake is a stateful fake of the slice of Azure Resource Manager
// that azarm uses: resource groups, virtual networks with peerings, network
// interfaces, managed disks imported from page blobs (with read access by
// SAS), and VMs with their power states and instance view.
//
// It is built on the SDKs' own fake servers (armcompute/v8/fake,
// armnetwork/v9/fake, armresources/fake): each fake method is backed by
// in-memory maps, and one transport routes a request to the compute,
// network or resources fake by its URL path, so the SDK clients, their
// pollers and their pagers run unchanged against it. No network is used.
//
// It behaves like Azure, not like an echo: a static private IP that another
// NIC holds is refused (400 PrivateIPAddressInUse), a dynamic one gets the
// subnet's lowest free address (Azure reserves the first four and the last);
// deleting a NIC attached to a VM is refused (400 NicInUse), a disk attached
// to a VM (409 OperationNotAllowed), a network with NICs in it (400
// InUseSubnetCannotBeDeleted); a NIC or disk already attached to another VM
// cannot be attached again; reading a missing resource is 404; deleting one
// is 204, as ARM's DELETE is idempotent. Each long-running operation gives
// Options.Polls non-terminal answers before its terminal one, and takes
// effect as ARM's do: a resource exists (provisioning "Creating") from the
// Begin call, a NIC's address is reserved then, and a deletion frees what it
// held when it completes. Two operations of the same kind on one resource at
// once: the second is refused with 409 AnotherOperationInProgress.
//
// Errors are real HTTP responses with ARM's body ({"error": {"code",
// "message"}}), so the adapter under test reads them as it would Azure's;
// a failed long-running operation ends with the status "Failed" and that
// body, as ARM's asynchronous operations do. FailNext injects such a
// failure. Where the codes are the fake's own choice the doc of the method
// says so.
package armfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake/server"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	computefake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"
	networkfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources"
	resourcesfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources/fake"

	"github.com/v2a-dr/v2a/impl/blob"
)

// ExportHost is the host of the SAS URLs that a disk's read access gives.
const ExportHost = "export.armfake.invalid"

// Options configures a Server.
type Options struct {
	// SubscriptionID is the subscription in the ids the fake makes.
	SubscriptionID string
	// Blobs holds the page blobs a disk import reads, and BlobEndpoint is
	// their account's URL prefix (ending in "/"): a source URI is
	// BlobEndpoint + container + "/" + blob.
	Blobs        blob.Store
	BlobEndpoint string
	// Polls is how many non-terminal answers each long-running operation
	// gives before its terminal one (Begin's answer is the first).
	Polls int
	// RetryAfter, when positive, is sent with each non-terminal answer
	// (as Retry-After-Ms) to say when to poll again, as ARM's Retry-After
	// does.
	RetryAfter time.Duration
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	opt Options

	// mu guards everything below: the SDK fakes call the handlers from
	// their own goroutines, and a test reads the state from another.
	mu       sync.Mutex
	groups   map[string]*armresources.ResourceGroup // key: lower(group)
	vnets    map[string]*armnetwork.VirtualNetwork  // key: lower(group/name)
	nics     map[string]*armnetwork.Interface
	disks    map[string]*disk
	vms      map[string]*vm
	ops      map[string]*op // key: api + " " + lower(path)
	failNext map[string]Failure
	calls    map[string]int // requests per API name
	sasSeq   int

	compute   *computefake.ServerFactoryTransport
	network   *networkfake.ServerFactoryTransport
	resources *resourcesfake.ServerFactoryTransport
}

type disk struct {
	armcompute.Disk
	data []byte
	sas  string // the active export's signature, "" when none
}

type vm struct {
	armcompute.VirtualMachine
	power string // "starting", "running", "deallocating", "deallocated", "stopped"
}

// op is a long-running operation in flight or finished.
type op struct {
	commit func() *Failure // applied when the terminal answer is sent
	done   bool
	final  *savedResponse // the terminal answer, replayed to late polls
}

type savedResponse struct {
	status int
	header http.Header
	body   []byte
}

// Failure is an ARM error: the HTTP status, code and message of the
// answer.
type Failure struct {
	Status  int
	Code    string
	Message string
}

func (f *Failure) Error() string {
	return fmt.Sprintf("armfake: %d %s: %s", f.Status, f.Code, f.Message)
}

func fail(status int, code, format string, args ...any) *Failure {
	return &Failure{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// New makes an empty fake.
func New(opt Options) *Server {
	if opt.SubscriptionID == "" {
		opt.SubscriptionID = "00000000-0000-0000-0000-000000000000"
	}
	s := &Server{
		opt:      opt,
		groups:   map[string]*armresources.ResourceGroup{},
		vnets:    map[string]*armnetwork.VirtualNetwork{},
		nics:     map[string]*armnetwork.Interface{},
		disks:    map[string]*disk{},
		vms:      map[string]*vm{},
		ops:      map[string]*op{},
		failNext: map[string]Failure{},
		calls:    map[string]int{},
	}
	s.compute = computefake.NewServerFactoryTransport(&computefake.ServerFactory{
		DisksServer:           s.disksServer(),
		VirtualMachinesServer: s.vmsServer(),
	})
	s.network = networkfake.NewServerFactoryTransport(&networkfake.ServerFactory{
		VirtualNetworksServer:        s.vnetsServer(),
		VirtualNetworkPeeringsServer: s.peeringsServer(),
		InterfacesServer:             s.nicsServer(),
	})
	s.resources = resourcesfake.NewServerFactoryTransport(&resourcesfake.ServerFactory{
		ResourceGroupsServer: s.groupsServer(),
	})
	return s
}

// SubscriptionID is the fake's subscription.
func (s *Server) SubscriptionID() string { return s.opt.SubscriptionID }

// Transport is the transport to put in the clients' options: it routes
// each request to the compute, network or resources fake by its path, and
// serves the disk exports' SAS URLs.
func (s *Server) Transport() policy.Transporter { return transport{s} }

// FailNext makes the next long-running operation of api (an SDK API name
// such as "VirtualMachinesClient.BeginCreateOrUpdate") end in f instead of
// succeeding. What the Begin call did stays done, as in Azure: a VM whose
// creation failed exists with provisioning state "Failed".
func (s *Server) FailNext(api string, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[api] = f
}

// Calls is how many requests of api the fake has answered (polls
// included).
func (s *Server) Calls(api string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[api]
}

type transport struct{ s *Server }

// groupInPath finds the resource group of a provider resource's path.
var groupInPath = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/`)

// pathKey carries the request's sanitized path to the handlers, which the
// SDK fakes call with the request's context.
type pathKey struct{}

const fakePollerStatus = "Fake-Poller-Status"

func (t transport) Do(req *http.Request) (*http.Response, error) {
	s := t.s
	if req.URL.Host == ExportHost {
		return s.serveExport(req), nil
	}
	api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string)
	path := server.SanitizePagerPollerPath(req.URL.Path)
	isPoll := path != req.URL.Path && strings.HasSuffix(req.URL.Path, "/get/fake/status")
	key := api + " " + strings.ToLower(path)

	s.mu.Lock()
	s.calls[api]++
	o := s.ops[key]
	rg := groupInPath.FindStringSubmatch(path)
	switch {
	case rg != nil && s.needGroup(rg[1]) != nil:
		// ARM answers for everything in a missing group (the SDK fakes'
		// pagers would not forget a failed list).
		f := s.needGroup(rg[1])
		s.mu.Unlock()
		return errorResponse(req, f), nil
	case isPoll && o == nil:
		s.mu.Unlock()
		return errorResponse(req, fail(http.StatusNotFound, "NotFound", "no operation %s on %s", api, path)), nil
	case isPoll && o.done:
		saved := o.final
		s.mu.Unlock()
		return saved.response(req), nil
	case !isPoll && o != nil && !o.done:
		s.mu.Unlock()
		return errorResponse(req, fail(http.StatusConflict, "AnotherOperationInProgress",
			"operation %s on %s is in progress", api, path)), nil
	}
	s.mu.Unlock()

	var inner policy.Transporter
	switch p := strings.ToLower(path); {
	case strings.Contains(p, "/providers/microsoft.compute/"):
		inner = s.compute
	case strings.Contains(p, "/providers/microsoft.network/"):
		inner = s.network
	case strings.Contains(p, "/resourcegroups") && !strings.Contains(p, "/providers/"):
		inner = s.resources
	default:
		return errorResponse(req, fail(http.StatusNotFound, "InvalidResourceType", "the fake serves no %s", path)), nil
	}
	resp, err := inner.Do(req.WithContext(context.WithValue(req.Context(), pathKey{}, path)))
	if err != nil {
		var f *Failure
		if errors.As(err, &f) {
			return errorResponse(req, f), nil
		}
		return nil, err
	}
	switch st := resp.Header.Get(fakePollerStatus); {
	case st == "InProgress" && s.opt.RetryAfter > 0:
		resp.Header.Set("Retry-After-Ms", strconv.FormatInt(s.opt.RetryAfter.Milliseconds(), 10))
	case st != "" && st != "InProgress":
		resp = s.finish(req, key, resp)
	}
	return resp, nil
}

// finish applies a long-running operation's effects when its terminal
// answer goes out, and keeps the answer for late polls.
func (s *Server) finish(req *http.Request, key string, resp *http.Response) *http.Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.ops[key]
	if o == nil || o.done {
		return resp
	}
	o.done = true
	if f := o.commit(); f != nil {
		body, _ := json.Marshal(errorBody(f))
		resp.Body.Close()
		resp = newResponse(req, http.StatusOK, body)
		resp.Header.Set(fakePollerStatus, "Failed")
	}
	o.final = save(resp)
	return resp
}

// lro registers a long-running operation begun by the request in ctx and
// returns its responder: s.opt.Polls non-terminal answers of status
// pending, then final with status done. commit runs under s.mu when the
// terminal answer goes out, with the failure FailNext injected for api (nil
// if none); it applies the operation's effects (or, on a failure, what
// Azure leaves behind) and returns the failure to report. Call with s.mu
// held.
func lro[T any](s *Server, ctx context.Context, api string, pending, done int, final T, commit func(inj *Failure) *Failure) (r azfake.PollerResponder[T]) {
	path, _ := ctx.Value(pathKey{}).(string)
	var inj *Failure
	if f, ok := s.failNext[api]; ok {
		inj = &f
		delete(s.failNext, api)
	}
	s.ops[api+" "+strings.ToLower(path)] = &op{commit: func() *Failure { return commit(inj) }}
	for range s.opt.Polls {
		r.AddNonTerminalResponse(pending, nil)
	}
	r.SetTerminalResponse(done, final, nil)
	return r
}

func errorBody(f *Failure) any {
	return map[string]any{"error": map[string]string{"code": f.Code, "message": f.Message}}
}

func newResponse(req *http.Request, status int, body []byte) *http.Response {
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// errorResponse is ARM's answer to a refused request.
func errorResponse(req *http.Request, f *Failure) *http.Response {
	body, _ := json.Marshal(errorBody(f))
	resp := newResponse(req, f.Status, body)
	resp.Header.Set("x-ms-error-code", f.Code)
	return resp
}

func save(resp *http.Response) *savedResponse {
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return &savedResponse{status: resp.StatusCode, header: resp.Header.Clone(), body: body}
}

func (r *savedResponse) response(req *http.Request) *http.Response {
	resp := newResponse(req, r.status, bytes.Clone(r.body))
	resp.Header = r.header.Clone()
	return resp
}

// serveExport answers a ranged GET of a disk's export SAS URL.
func (s *Server) serveExport(req *http.Request) *http.Response {
	sig := req.URL.Query().Get("sig")
	s.mu.Lock()
	var data []byte
	for _, d := range s.disks {
		if d.sas != "" && d.sas == sig {
			data = d.data
		}
	}
	s.mu.Unlock()
	if data == nil || req.Method != http.MethodGet {
		return errorResponse(req, fail(http.StatusForbidden, "AuthenticationFailed", "no active export with this signature"))
	}
	size := int64(len(data))
	rng := req.Header.Get("Range")
	if rng == "" {
		rng = req.Header.Get("x-ms-range")
	}
	if rng == "" {
		return newResponse(req, http.StatusOK, bytes.Clone(data))
	}
	a, b, ok := strings.Cut(strings.TrimPrefix(rng, "bytes="), "-")
	from, err1 := strconv.ParseInt(a, 10, 64)
	to, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || from < 0 || to < from || from >= size {
		return errorResponse(req, fail(http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "range %q of %d bytes", rng, size))
	}
	to = min(to, size-1)
	resp := newResponse(req, http.StatusPartialContent, bytes.Clone(data[from:to+1]))
	resp.Header.Set("Content-Type", "application/octet-stream")
	resp.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, size))
	return resp
}
