package workload

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"time"
)

// Orders is a cross-VM order flow with real causal dependencies, the
// canonical multi-VM consistency test application:
//
//   - the database VM commits order i (one 512-byte record in its order
//     table);
//   - only after that write is acknowledged does the web VM log order i
//     (its log entry depends on the database write);
//   - every ReportEvery the report VM reads both and writes a summary
//     "orders 1..c are in both" (it depends on the web and database writes
//     it read).
//
// Its invariant spans the three disks: no order in the web log without its
// database record, and no report counting an order either lacks. A set of
// images cut at one consistent moment always satisfies it; a cut where the
// web VM is later than the database VM need not.
type Orders struct {
	db, web, report Writer
	names           [3]string // db, web, report machine names
	spec            Spec
	rate            float64 // orders per second
	next            uint64  // next order id
	amount          map[uint64]int64
	dbK             map[uint64]uint64 // order -> the database write's k
	webK            map[uint64]uint64 // order -> the web write's k
	webDone         uint64            // orders 1..webDone are logged on the web VM
	frozen          map[string]bool
	webWaiting      []uint64 // orders committed while the web VM is frozen
	lastReport      time.Duration
	clock           time.Duration
	dep             func(machine string, k uint64, on string, onK uint64)
	err             error
}

// Order-flow layout parameters.
const (
	OrdersMax       = 8192       // table slots; order i lives in slot i mod OrdersMax (slot 0 is the report's)
	ordersMagicDB   = 0x4f524442 // "ORDB"
	ordersMagicWeb  = 0x4f525745 // "ORWE"
	ordersMagicRep  = 0x4f525250 // "ORRP"
	ordersRecord    = 512
	OrdersReportDue = 10 * time.Second
)

// ErrOrders is returned when an order-flow image breaks the invariant.
var ErrOrders = errors.New("workload: order-flow invariant violated")

// NewOrders builds the order flow over three machines' writers. dep is
// called for every cross-machine dependency: the write k on machine
// happens after the write onK on machine on was acknowledged.
func NewOrders(names [3]string, ws [3]Writer, spec Spec, rate float64, dep func(machine string, k uint64, on string, onK uint64)) (*Orders, error) {
	for i, w := range ws {
		if need := spec.RegionStart + OrdersMax*ordersRecord; w.Size(0) < need {
			return nil, fmt.Errorf("workload: orders: %s's disk is %d bytes, the order flow needs %d", names[i], w.Size(0), need)
		}
	}
	if rate <= 0 {
		rate = 0.5
	}
	return &Orders{db: ws[0], web: ws[1], report: ws[2], names: names, spec: spec, rate: rate, next: 1,
		amount: map[uint64]int64{}, dbK: map[uint64]uint64{}, webK: map[uint64]uint64{}, frozen: map[string]bool{}, dep: dep}, nil
}

// Name implements Workload.
func (*Orders) Name() string { return "orders" }

func (o *Orders) slot(i uint64) int64 { return o.spec.RegionStart + int64(ordersSlot(i))*ordersRecord }

// ordersSlot is where order i lives: slots 1..OrdersMax-1, reused in turn.
func ordersSlot(i uint64) uint64 {
	if i == 0 {
		return 0
	}
	return 1 + (i-1)%(OrdersMax-1)
}

func orderRecord(magic uint32, id uint64, v int64) []byte {
	b := make([]byte, ordersRecord)
	binary.BigEndian.PutUint32(b, magic)
	binary.BigEndian.PutUint64(b[4:], id)
	binary.BigEndian.PutUint64(b[12:], uint64(v))
	binary.BigEndian.PutUint32(b[ordersRecord-4:], crc32.Checksum(b[:ordersRecord-4], crcTable))
	return b
}

func parseRecord(b []byte, magic uint32) (id uint64, v int64, ok bool) {
	if binary.BigEndian.Uint32(b) != magic || crc32.Checksum(b[:ordersRecord-4], crcTable) != binary.BigEndian.Uint32(b[ordersRecord-4:]) {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[4:]), int64(binary.BigEndian.Uint64(b[12:])), true
}

// Step implements Workload: a new order, and the report when it is due.
func (o *Orders) Step(r *rand.Rand) (time.Duration, error) {
	// Orders arrive as a Poisson process, as customers do (and so that no
	// fixed phase hides a race from the tag protocol's rounds).
	gap := time.Duration(r.ExpFloat64() / o.rate * float64(time.Second))
	o.clock += gap
	if o.err != nil {
		return gap, o.err
	}
	if !o.frozen[o.names[0]] {
		id := o.next
		o.next++
		o.amount[id] = 1 + r.Int64N(10_000)
		o.db.Submit(0, o.slot(id), orderRecord(ordersMagicDB, id, o.amount[id]), func(k uint64, err error) {
			if o.fail(err) {
				return
			}
			o.dbK[id] = k
			o.logOnWeb(id)
		})
	}
	if o.clock-o.lastReport >= OrdersReportDue && !o.frozen[o.names[2]] && o.webDone > 0 {
		o.lastReport = o.clock
		c := o.webDone
		wk, dk := o.webK[c], o.dbK[c]
		o.report.Submit(0, o.slot(0), orderRecord(ordersMagicRep, c, int64(o.clock)), func(k uint64, err error) {
			if o.fail(err) {
				return
			}
			o.dep(o.names[2], k, o.names[1], wk)
			o.dep(o.names[2], k, o.names[0], dk)
		})
	}
	return gap, o.err
}

func (o *Orders) fail(err error) bool {
	if err != nil && o.err == nil {
		o.err = fmt.Errorf("workload: orders: %w", err)
	}
	return err != nil
}

// logOnWeb writes order id's web log entry, which depends on its database
// record: it is issued only once that write was acknowledged.
func (o *Orders) logOnWeb(id uint64) {
	if o.frozen[o.names[1]] {
		o.webWaiting = append(o.webWaiting, id)
		return
	}
	dk := o.dbK[id]
	o.web.Submit(0, o.slot(id), orderRecord(ordersMagicWeb, id, o.amount[id]), func(k uint64, err error) {
		if o.fail(err) {
			return
		}
		o.dep(o.names[1], k, o.names[0], dk)
		o.webK[id] = k
		for o.webK[o.webDone+1] != 0 {
			o.webDone++
		}
	})
}

// Freeze implements Workload (all three machines).
func (o *Orders) Freeze() error {
	for _, n := range o.names {
		o.FreezeMachine(n)
	}
	return nil
}

// Thaw implements Workload.
func (o *Orders) Thaw() {
	for _, n := range o.names {
		o.ThawMachine(n)
	}
}

// FreezeMachine quiesces the flow's part on one machine: it issues nothing
// new there until ThawMachine (writes in flight complete).
func (o *Orders) FreezeMachine(name string) error { o.frozen[name] = true; return nil }

// ThawMachine lets the machine's part go on, logging the orders that
// waited for the web VM.
func (o *Orders) ThawMachine(name string) {
	delete(o.frozen, name)
	if name == o.names[1] {
		w := o.webWaiting
		o.webWaiting = nil
		for _, id := range w {
			o.logOnWeb(id)
		}
	}
}

// Check implements Workload for one machine alone: a machine's part has no
// invariant of its own (see CheckGroup).
func (o *Orders) Check([]io.ReaderAt, bool) (Report, error) {
	return Report{Formatted: true, Summary: "order flow: checked across machines"}, nil
}

// Machines are the flow's database, web and report machines.
func (o *Orders) Machines() [3]string { return o.names }

// Orders is the number of orders committed on the database VM.
func (o *Orders) Orders() uint64 { return uint64(len(o.dbK)) }

// CheckGroup checks the cross-machine invariant on one image of each of
// the flow's machines (disk 0 of the database, web and report machines).
func (o *Orders) CheckGroup(db, web, report io.ReaderAt) (Report, error) {
	return CheckOrders(db, web, report, o.spec.RegionStart)
}

// CheckOrders checks the order flow's invariant on three images. Order
// slots are reused, so a slot may hold a later order than the one asked
// about: since orders commit in order, a later order there means the earlier
// one was committed too.
func CheckOrders(db, web, report io.ReaderAt, start int64) (Report, error) {
	region := func(img io.ReaderAt) ([]byte, error) {
		b := make([]byte, OrdersMax*ordersRecord)
		if _, err := img.ReadAt(b, start); err != nil && err != io.EOF {
			return nil, err
		}
		return b, nil
	}
	dbR, err := region(db)
	if err != nil {
		return Report{}, err
	}
	webR, err := region(web)
	if err != nil {
		return Report{}, err
	}
	repR, err := region(report)
	if err != nil {
		return Report{}, err
	}
	rec := func(r []byte, slot uint64, magic uint32) (uint64, int64, bool) {
		return parseRecord(r[slot*ordersRecord:(slot+1)*ordersRecord], magic)
	}
	var inDB, logged, newestDB uint64
	for slot := uint64(1); slot < OrdersMax; slot++ {
		if id, _, ok := rec(dbR, slot, ordersMagicDB); ok && ordersSlot(id) == slot {
			inDB++
			newestDB = max(newestDB, id)
		}
	}
	for slot := uint64(1); slot < OrdersMax; slot++ {
		id, v, ok := rec(webR, slot, ordersMagicWeb)
		if !ok || ordersSlot(id) != slot {
			continue
		}
		logged++
		did, dv, dok := rec(dbR, slot, ordersMagicDB)
		switch {
		case !dok || did < id:
			return Report{}, fmt.Errorf("%w: order %d is in the web log but not in the database", ErrOrders, id)
		case did == id && dv != v:
			return Report{}, fmt.Errorf("%w: order %d is %d in the web log but %d in the database", ErrOrders, id, v, dv)
		}
	}
	rep := Report{Formatted: true}
	reported := uint64(0)
	if c, _, ok := rec(repR, 0, ordersMagicRep); ok {
		reported = c
		lo := uint64(1)
		if c >= OrdersMax {
			lo = c - (OrdersMax - 2)
		}
		for i := lo; i <= c; i++ {
			if id, _, ok := rec(dbR, ordersSlot(i), ordersMagicDB); !ok || id < i {
				return rep, fmt.Errorf("%w: the report counts %d orders but order %d is not in the database", ErrOrders, c, i)
			}
			if id, _, ok := rec(webR, ordersSlot(i), ordersMagicWeb); !ok || id < i {
				return rep, fmt.Errorf("%w: the report counts %d orders but order %d is not in the web log", ErrOrders, c, i)
			}
		}
	}
	rep.Summary = fmt.Sprintf("orders: db=%d (newest %d) web=%d reported=%d", inDB, newestDB, logged, reported)
	return rep, nil
}
