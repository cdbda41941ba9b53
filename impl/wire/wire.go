// Package wire is v2a's message framing: every message between components is
// a frame that names its version and kind and ends in a CRC-32C, so that a
// corrupt, truncated or foreign frame is refused with an error that says
// which, never half-decoded.
//
// Frame layout (big-endian):
//
//	magic   2  'v' '2'
//	version 1  Version
//	kind    2  the message kind (see Register)
//	length  4  payload length
//	payload    the message, encoded with Encoder
//	crc     4  CRC-32C (Castagnoli) of everything before it
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"sync"
)

// Version is the frame format version this package writes and accepts.
const Version = 1

// MaxPayload bounds a frame's payload; larger lengths are refused before any
// allocation, so a corrupt length cannot exhaust memory.
const MaxPayload = 64 << 20

const headerLen = 2 + 1 + 2 + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors returned by Decode. Each decoding error wraps one of these, so that
// callers can tell a damaged frame from a peer speaking another version.
var (
	ErrShort    = errors.New("wire: frame truncated")
	ErrMagic    = errors.New("wire: not a v2a frame (bad magic)")
	ErrVersion  = errors.New("wire: unsupported frame version")
	ErrChecksum = errors.New("wire: frame checksum mismatch (corrupt frame)")
	ErrTooLarge = errors.New("wire: frame payload too large")
	ErrKind     = errors.New("wire: unknown message kind")
	ErrPayload  = errors.New("wire: malformed payload")
)

// Kind identifies a message type inside a frame.
type Kind uint16

// Msg is a message that can travel in a frame. MarshalWire appends the
// message's fields; UnmarshalWire reads them back in the same order (or
// reads the whole payload with Decoder.Rest, for a payload another codec
// wrote with Encoder.AppendWith).
type Msg interface {
	WireKind() Kind
	MarshalWire(e *Encoder)
	UnmarshalWire(d *Decoder) error
}

var (
	registryMu sync.RWMutex
	registry   = map[Kind]func() Msg{}
	names      = map[Kind]string{}
)

// Register makes a message kind decodable. It panics on a kind registered
// twice: two message types sharing a kind is a programming error that must
// not survive the first test.
func Register(k Kind, name string, newMsg func() Msg) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[k]; dup {
		panic(fmt.Sprintf("wire: kind %d registered twice (%s and %s)", k, names[k], name))
	}
	registry[k] = newMsg
	names[k] = name
}

// KindName is the registered name of k, for traces and errors.
func KindName(k Kind) string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	if n, ok := names[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Kinds lists the registered kinds in order.
func Kinds() []Kind {
	registryMu.RLock()
	defer registryMu.RUnlock()
	ks := make([]Kind, 0, len(registry))
	for k := range registry {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

// Encode frames m.
func Encode(m Msg) []byte {
	return AppendFrame(nil, m)
}

// AppendFrame appends m's frame to dst and returns the extended slice.
func AppendFrame(dst []byte, m Msg) []byte {
	start := len(dst)
	dst = append(dst, 'v', '2', Version, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(dst[start+3:], uint16(m.WireKind()))
	e := Encoder{buf: dst}
	m.MarshalWire(&e)
	dst = e.buf
	n := len(dst) - start - headerLen
	binary.BigEndian.PutUint32(dst[start+5:], uint32(n))
	crc := crc32.Checksum(dst[start:], castagnoli)
	return binary.BigEndian.AppendUint32(dst, crc)
}

// FrameLen reports the total length of the frame that starts b, once its
// header is complete; ok is false while fewer than the header's bytes are
// available. Stream readers use it to cut frames out of a byte stream.
func FrameLen(b []byte) (n int, ok bool, err error) {
	if len(b) < headerLen {
		return 0, false, nil
	}
	if b[0] != 'v' || b[1] != '2' {
		return 0, false, ErrMagic
	}
	l := binary.BigEndian.Uint32(b[5:])
	if l > MaxPayload {
		return 0, false, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, l, MaxPayload)
	}
	return headerLen + int(l) + 4, true, nil
}

// Decode checks frame and decodes the message in it.
func Decode(frame []byte) (Msg, error) {
	k, payload, err := Open(frame)
	if err != nil {
		return nil, err
	}
	return decode(k, payload)
}

// DecodeOpened decodes the message in a frame that Open has already
// accepted: it checks what Peek checks (magic, version, length) but not
// the CRC, so that a frame's CRC is computed once on its way in, by
// whoever received it (a runtime reading it off a connection), not once
// more by the actor decoding it. A frame that was not opened must go
// through Decode.
func DecodeOpened(frame []byte) (Msg, error) {
	k, err := Peek(frame)
	if err != nil {
		return nil, err
	}
	return decode(k, frame[headerLen:len(frame)-4])
}

// decode decodes the payload of a checked frame of kind k.
func decode(k Kind, payload []byte) (Msg, error) {
	registryMu.RLock()
	newMsg, ok := registry[k]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %d", ErrKind, k)
	}
	m := newMsg()
	d := Decoder{buf: payload}
	if err := m.UnmarshalWire(&d); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPayload, KindName(k), err)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPayload, KindName(k), d.err)
	}
	if len(d.buf) != 0 {
		return nil, fmt.Errorf("%w: %s: %d trailing bytes", ErrPayload, KindName(k), len(d.buf))
	}
	return m, nil
}

// Open checks a frame's header and checksum and returns its kind and payload
// without decoding it.
func Open(frame []byte) (Kind, []byte, error) {
	k, err := Peek(frame)
	if err != nil {
		return 0, nil, err
	}
	n := len(frame)
	want := binary.BigEndian.Uint32(frame[n-4:])
	if got := crc32.Checksum(frame[:n-4], castagnoli); got != want {
		return 0, nil, fmt.Errorf("%w: crc %08x, frame says %08x", ErrChecksum, got, want)
	}
	return k, frame[headerLen : n-4], nil
}

// Peek checks what Open checks but the CRC — magic, version, length: frame
// is exactly one frame — and returns its kind. It is for a sender checking
// a frame it encoded itself, a megabyte at times: the CRC guards the trip,
// and the receiver's Open checks it.
func Peek(frame []byte) (Kind, error) {
	n, ok, err := FrameLen(frame)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: %d bytes, header needs %d", ErrShort, len(frame), headerLen)
	}
	if frame[2] != Version {
		return 0, fmt.Errorf("%w: %d (this build speaks %d)", ErrVersion, frame[2], Version)
	}
	if len(frame) < n {
		return 0, fmt.Errorf("%w: %d of %d bytes", ErrShort, len(frame), n)
	}
	if len(frame) > n {
		return 0, fmt.Errorf("%w: %d bytes after the frame", ErrPayload, len(frame)-n)
	}
	return Kind(binary.BigEndian.Uint16(frame[3:])), nil
}

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
