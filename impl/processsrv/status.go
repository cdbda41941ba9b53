package processsrv

import (
	"math"
	"time"

	"github.com/v2a-dr/v2a/impl/batch"
	"github.com/v2a-dr/v2a/impl/proto"
	"github.com/v2a-dr/v2a/impl/runtime"
	"github.com/v2a-dr/v2a/impl/wire"
)

// EstimateUnknown is the upload-time estimate when there is a backlog but no
// upload finished in the rate window (uploads are stalled): as long as
// forever, so that a "backlog high" alert fires.
const EstimateUnknown = time.Duration(math.MaxInt64)

// rateWindow is how far back the upload rate looks.
const rateWindow = 5 * time.Minute

// uploadRate keeps the uploads of the last rateWindow to measure the
// recent upload rate.
type uploadRate struct {
	samples []rateSample
}

type rateSample struct {
	at       time.Time
	rawBytes int64
}

func (r *uploadRate) add(now time.Time, rawBytes int64) {
	r.samples = append(r.samples, rateSample{now, rawBytes})
	r.trim(now)
}

func (r *uploadRate) trim(now time.Time) {
	i := 0
	for i < len(r.samples) && !r.samples[i].at.After(now.Add(-rateWindow)) {
		i++
	}
	if i > 0 {
		r.samples = append(r.samples[:0], r.samples[i:]...)
	}
}

// bytesPerSec is the item bytes uploaded per second over the last
// rateWindow, or since the server started if that is more recent.
func (r *uploadRate) bytesPerSec(now, started time.Time) float64 {
	r.trim(now)
	span := min(now.Sub(started), rateWindow)
	if span <= 0 {
		return 0
	}
	var sum int64
	for _, s := range r.samples {
		sum += s.rawBytes
	}
	return float64(sum) / span.Seconds()
}

// estimate is how long the backlog would take to upload at the recent rate.
func estimate(backlogBytes int64, bytesPerSec float64) time.Duration {
	switch {
	case backlogBytes == 0:
		return 0
	case bytesPerSec <= 0:
		return EstimateUnknown
	}
	sec := float64(backlogBytes) / bytesPerSec
	if sec >= float64(EstimateUnknown/time.Second) {
		return EstimateUnknown
	}
	return time.Duration(sec * float64(time.Second))
}

// Status is a process server's state for the harness and operators: a deep
// copy, safe to keep.
type Status struct {
	Server   string          // the name in PSHealth
	Machines []MachineStatus // by machine name

	// Totals over the machines.
	BacklogItems  int64   // items acknowledged and not uploaded yet
	BacklogBytes  int64   // their item bytes
	UploadedItems int64   // items uploaded since start
	RawBytes      int64   // item bytes of what was uploaded since start
	SealedBytes   int64   // sealed (compressed, encrypted) bytes uploaded since start
	Ratio         float64 // RawBytes / SealedBytes; 0 before the first upload

	CacheUsedBytes int64 // bytes of item files on the cache disk
	CacheCapBytes  int64 // Config.CacheCapBytes
	CacheFull      bool  // the last item that arrived was answered cache-full

	UploadBytesPerSec float64       // recent upload rate, in item bytes
	EstimateUpload    time.Duration // BacklogBytes at that rate; EstimateUnknown if stalled

	ContainerReady    bool  // the cache container was created (uploads can run)
	InFlight          int   // items in the pipeline (sealing, sealed or uploading), <= MaxUploads+SealAhead
	PipelineBytes     int64 // bytes the pipeline holds in memory now (items being sealed, sealed items being uploaded)
	PeakPipelineBytes int64 // the most PipelineBytes has been since start
	RetainedBytes     int64 // item bytes kept as received until uploaded, <= Config.RetainBytes
	RecycledItems     int64 // items written over a recycled file since start (Config.RecycleFiles)

	Errors    int64  // errors since start (refused items, disk and storage failures)
	LastError string // the latest of them, "" if none
}

// MachineStatus is one machine's stream at the process server.
type MachineStatus struct {
	Machine       string
	Acked         uint64  // highest item cached and acknowledged
	UploadedUpTo  uint64  // every item up to this one is in the cache container
	BacklogItems  int64   // cached items not uploaded yet
	BacklogBytes  int64   // their item bytes
	UploadedItems int64   // items uploaded since start
	RawBytes      int64   // item bytes uploaded since start
	SealedBytes   int64   // sealed bytes uploaded since start
	Ratio         float64 // RawBytes / SealedBytes; 0 before the first upload
	Codec         string  // the compression of the latest item sealed ("" before the first)
	LastError     string  // the latest upload error of this machine, "" if none
}

// Status returns the server's state. Call it on the server's turn: from
// Handle's goroutine, or through the runtime's Inspect.
func (s *Server) Status() Status {
	st := Status{
		Server: s.name, CacheUsedBytes: s.usedBytes, CacheCapBytes: s.cfg.CacheCapBytes, CacheFull: s.full,
		ContainerReady: s.containerReady, InFlight: s.inFlight, PipelineBytes: s.memBytes,
		PeakPipelineBytes: s.peakMemBytes, RetainedBytes: s.retainedBytes, RecycledItems: s.recycledItems, Errors: s.errs, LastError: s.lastErr,
	}
	for _, name := range s.order {
		m := s.machines[name]
		ms := MachineStatus{Machine: name, Acked: m.acked, UploadedUpTo: m.uploadedUpTo(),
			UploadedItems: m.uploadedItems, RawBytes: m.rawBytes, SealedBytes: m.sealedBytes,
			Ratio: ratio(m.rawBytes, m.sealedBytes), LastError: m.lastErr}
		if m.codec != batch.CodecNone {
			ms.Codec = m.codec.String()
		}
		ms.BacklogItems, ms.BacklogBytes = m.backlog()
		st.Machines = append(st.Machines, ms)
		st.BacklogItems += ms.BacklogItems
		st.BacklogBytes += ms.BacklogBytes
		st.UploadedItems += ms.UploadedItems
		st.RawBytes += ms.RawBytes
		st.SealedBytes += ms.SealedBytes
	}
	st.Ratio = ratio(st.RawBytes, st.SealedBytes)
	if !s.lastNow.IsZero() {
		st.UploadBytesPerSec = s.rate.bytesPerSec(s.lastNow, s.startedAt)
	}
	st.EstimateUpload = estimate(st.BacklogBytes, st.UploadBytesPerSec)
	return st
}

func ratio(raw, sealed int64) float64 {
	if sealed == 0 {
		return 0
	}
	return float64(raw) / float64(sealed)
}

// health builds the PSHealth report.
func (s *Server) health(now time.Time) *proto.PSHealth {
	h := &proto.PSHealth{Server: s.name, CacheUsedBytes: s.usedBytes, CacheCapBytes: s.cfg.CacheCapBytes}
	for _, name := range s.order {
		m := s.machines[name]
		n, b := m.backlog()
		h.Machines = append(h.Machines, proto.MachineBacklog{Machine: name, Items: n, Bytes: b})
		h.BacklogItems += n
		h.BacklogBytes += b
		h.UploadedBytes += m.sealedBytes
		h.RawBytes += m.rawBytes
	}
	h.EstimateUpload = estimate(h.BacklogBytes, s.rate.bytesPerSec(now, s.startedAt))
	return h
}

func (s *Server) sendHealth(ctx runtime.Context) {
	h := s.health(ctx.Now())
	ctx.Send(s.cfg.ConfigServer, wire.Encode(h))
	ctx.Log().Debug("processsrv: health", "backlog_items", h.BacklogItems, "backlog_bytes", h.BacklogBytes,
		"cache_used_bytes", h.CacheUsedBytes, "estimate", h.EstimateUpload)
}
