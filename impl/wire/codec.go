package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Encoder appends a message's fields to a frame. Integers are varints,
// byte strings are length-prefixed.
type Encoder struct{ buf []byte }

// Grow makes room for at least n more bytes, so that a caller who knows
// roughly how big the message is appends without reallocating.
func (e *Encoder) Grow(n int) { e.buf = slices.Grow(e.buf, n) }

// Uint appends v.
func (e *Encoder) Uint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }

// Int appends v.
func (e *Encoder) Int(v int64) { e.buf = binary.AppendVarint(e.buf, v) }

// Bool appends v.
func (e *Encoder) Bool(v bool) {
	if v {
		e.buf = append(e.buf, 1)
	} else {
		e.buf = append(e.buf, 0)
	}
}

// Bytes appends b with its length.
func (e *Encoder) Bytes(b []byte) {
	e.Uint(uint64(len(b)))
	e.buf = append(e.buf, b...)
}

// String appends s with its length.
func (e *Encoder) String(s string) {
	e.Uint(uint64(len(s)))
	e.buf = append(e.buf, s...)
}

// Time appends t as Unix nanoseconds (the zero time as 0).
func (e *Encoder) Time(t time.Time) {
	if t.IsZero() {
		e.Int(0)
		return
	}
	e.Int(t.UnixNano())
}

// Duration appends d.
func (e *Encoder) Duration(d time.Duration) { e.Int(int64(d)) }

// Float appends f.
func (e *Encoder) Float(f float64) { e.Uint(math.Float64bits(f)) }

// Strings appends a list of strings.
func (e *Encoder) Strings(ss []string) {
	e.Uint(uint64(len(ss)))
	for _, s := range ss {
		e.String(s)
	}
}

// Decoder reads a message's fields in the order they were encoded. The
// first error sticks: later reads return zero values, and Err reports it, so
// an UnmarshalWire can read every field and check once at the end.
type Decoder struct {
	buf []byte
	err error
}

var errShortField = errors.New("field truncated")

func (d *Decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.buf = nil
}

// Err is the first error met while decoding.
func (d *Decoder) Err() error { return d.err }

// Uint reads an unsigned varint.
func (d *Decoder) Uint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail(errShortField)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Int reads a signed varint.
func (d *Decoder) Int() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail(errShortField)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Bool reads a bool.
func (d *Decoder) Bool() bool {
	if len(d.buf) < 1 {
		d.fail(errShortField)
		return false
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	if b > 1 {
		d.fail(fmt.Errorf("bool byte %d", b))
		return false
	}
	return b == 1
}

// Bytes reads a length-prefixed byte string. The result aliases the frame:
// copy it to keep it beyond the frame's life.
func (d *Decoder) Bytes() []byte {
	n := d.Uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.fail(fmt.Errorf("byte string of %d, %d left", n, len(d.buf)))
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

// String reads a length-prefixed string.
func (d *Decoder) String() string { return string(d.Bytes()) }

// Time reads a time written by Encoder.Time, in UTC.
func (d *Decoder) Time() time.Time {
	n := d.Int()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Duration reads a duration.
func (d *Decoder) Duration() time.Duration { return time.Duration(d.Int()) }

// Float reads a float64.
func (d *Decoder) Float() float64 { return math.Float64frombits(d.Uint()) }

// Strings reads a list of strings.
func (d *Decoder) Strings() []string {
	n := d.Uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) { // every string takes at least one byte
		d.fail(fmt.Errorf("list of %d, %d bytes left", n, len(d.buf)))
		return nil
	}
	ss := make([]string, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		ss = append(ss, d.String())
	}
	return ss
}

// Encoded returns what was encoded so far.
func (e *Encoder) Encoded() []byte { return e.buf }

// NewDecoder reads fields from b.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// Remaining is the number of bytes not read yet.
func (d *Decoder) Remaining() int { return len(d.buf) }

// AppendWith lets another codec append a message's payload (impl/proto's
// protobuf messages): f receives the frame so far and returns it extended.
// A message that uses it encodes nothing else.
func (e *Encoder) AppendWith(f func(dst []byte) []byte) { e.buf = f(e.buf) }

// Rest reads every byte not read yet: the payload of a message encoded with
// AppendWith. The result aliases the frame.
func (d *Decoder) Rest() []byte {
	b := d.buf
	d.buf = d.buf[len(d.buf):]
	return b
}
