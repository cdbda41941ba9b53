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
	reports         uint64 // reports written
	slots           int64  // record slots of each machine's region
	clock           time.Duration
	dep             func(machine string, k uint64, on string, onK uint64)
	err             error
}

// Order-flow layout parameters. Each machine's region is a table of
// 512-byte record slots, as many as the region holds: order i lives in slot
// (i-1) mod slots of the database and the web machine, report j in slot
// (j-1) mod slots of the report machine. A slot is rewritten only when the
// table wraps (hours at the scenarios' rates), so a lost write stays
// visible on the replica.
const (
	ordersMinSlots  = 64
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
	slots := int64(-1)
	for i, w := range ws {
		region := w.Size(0) - spec.RegionStart
		if spec.RegionLen > 0 {
			region = min(region, spec.RegionLen)
		}
		if need := int64(ordersMinSlots * ordersRecord); region < need {
			return nil, fmt.Errorf("workload: orders: %s's disk has %d bytes from %d, the order flow needs %d", names[i], max(region, 0), spec.RegionStart, need)
		}
		if n := region / ordersRecord; slots < 0 || n < slots {
			slots = n
		}
	}
	if rate <= 0 {
		rate = 0.5
	}
	return &Orders{db: ws[0], web: ws[1], report: ws[2], names: names, spec: spec, rate: rate, next: 1, slots: slots,
		amount: map[uint64]int64{}, dbK: map[uint64]uint64{}, webK: map[uint64]uint64{}, frozen: map[string]bool{}, dep: dep}, nil
}

// Name implements Workload.
func (*Orders) Name() string { return "orders" }

// slot is the offset of record i (order or report number, from 1).
func (o *Orders) slot(i uint64) int64 {
	return o.spec.RegionStart + ordersSlot(i, o.slots)*ordersRecord
}

// ordersSlot is where record i (from 1) lives in a table of n slots.
func ordersSlot(i uint64, n int64) int64 { return int64((i - 1) % uint64(n)) }

// orderRecord is a 512-byte record: magic, id, value, then the record's
// text (the order's customer and items, a log line, a report), and a CRC.
func orderRecord(r *rand.Rand, magic uint32, id uint64, v int64) []byte {
	b := make([]byte, ordersRecord)
	binary.BigEndian.PutUint32(b, magic)
	binary.BigEndian.PutUint64(b[4:], id)
	binary.BigEndian.PutUint64(b[12:], uint64(v))
	fillRecords(r, b[20:ordersRecord-4])
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
		o.db.Submit(0, o.slot(id), orderRecord(r, ordersMagicDB, id, o.amount[id]), func(k uint64, err error) {
			if o.fail(err) {
				return
			}
			o.dbK[id] = k
			o.logOnWeb(r, id)
		})
	}
	if o.clock-o.lastReport >= OrdersReportDue && !o.frozen[o.names[2]] && o.webDone > 0 {
		o.lastReport = o.clock
		c := o.webDone
		wk, dk := o.webK[c], o.dbK[c]
		o.reports++
		o.report.Submit(0, o.slot(o.reports), orderRecord(r, ordersMagicRep, o.reports, int64(c)), func(k uint64, err error) {
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
// r is the flow's random stream, used for the entry's text.
func (o *Orders) logOnWeb(r *rand.Rand, id uint64) {
	if o.frozen[o.names[1]] {
		o.webWaiting = append(o.webWaiting, id)
		return
	}
	dk := o.dbK[id]
	o.web.Submit(0, o.slot(id), orderRecord(r, ordersMagicWeb, id, o.amount[id]), func(k uint64, err error) {
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
		// The entries' text comes from a stream of their own: a thaw is
		// not a step and has no step's random stream.
		r := rand.New(rand.NewPCG(o.next, uint64(len(w))))
		for _, id := range w {
			o.logOnWeb(r, id)
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
	return CheckOrders(db, web, report, o.spec.RegionStart, o.slots)
}

// Slots is the number of record slots of each machine's table.
func (o *Orders) Slots() int64 { return o.slots }

// CheckOrders checks the order flow's invariant on three images whose
// tables have n slots each. Order slots are reused, so a slot may hold a
// later order than the one asked about: since orders commit in order, a
// later order there means the earlier one was committed too.
func CheckOrders(db, web, report io.ReaderAt, start, n int64) (Report, error) {
	region := func(img io.ReaderAt) ([]byte, error) {
		b := make([]byte, n*ordersRecord)
		if _, err := img.ReadAt(b, start); err != nil && err != io.EOF {
			return nil, fmt.Errorf("workload: orders: read table: %w", err)
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
	rec := func(r []byte, slot int64, magic uint32) (uint64, int64, bool) {
		return parseRecord(r[slot*ordersRecord:(slot+1)*ordersRecord], magic)
	}
	var inDB, logged, newestDB uint64
	for slot := int64(0); slot < n; slot++ {
		if id, _, ok := rec(dbR, slot, ordersMagicDB); ok && ordersSlot(id, n) == slot {
			inDB++
			newestDB = max(newestDB, id)
		}
	}
	for slot := int64(0); slot < n; slot++ {
		id, v, ok := rec(webR, slot, ordersMagicWeb)
		if !ok || ordersSlot(id, n) != slot {
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
	// The newest report is the one that counts.
	var newestRep uint64
	var c uint64
	for slot := int64(0); slot < n; slot++ {
		if id, v, ok := rec(repR, slot, ordersMagicRep); ok && ordersSlot(id, n) == slot && id > newestRep {
			newestRep, c = id, uint64(v)
		}
	}
	rep := Report{Formatted: true}
	if c > 0 {
		lo := uint64(1)
		if c > uint64(n) {
			lo = c - uint64(n) + 1
		}
		for i := lo; i <= c; i++ {
			if id, _, ok := rec(dbR, ordersSlot(i, n), ordersMagicDB); !ok || id < i {
				return rep, fmt.Errorf("%w: the report counts %d orders but order %d is not in the database", ErrOrders, c, i)
			}
			if id, _, ok := rec(webR, ordersSlot(i, n), ordersMagicWeb); !ok || id < i {
				return rep, fmt.Errorf("%w: the report counts %d orders but order %d is not in the web log", ErrOrders, c, i)
			}
		}
	}
	rep.Summary = fmt.Sprintf("orders: db=%d (newest %d) web=%d reported=%d", inDB, newestDB, logged, c)
	return rep, nil
}
