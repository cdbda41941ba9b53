package proto

import "fmt"

// Consistency is what a recovery point, a bookmark or a group round
// promises: crash-consistent (the disk as a power cut would leave it) or
// app-consistent (the applications were quiesced first). It is the one
// spelling of a point's kind in every component.
//
// Encodings, both fixed: the numeric value is what the .hrl change log
// stores (one byte) and what a stream item carries (impl/batch); the text
// ("crash", "app") is what messages, catalogs and traces carry. The zero
// value means "no kind" (e.g. a ReplicaEvent that is not about a point) and
// has the empty text.
type Consistency uint8

// The kinds. Their values are part of the .hrl on-disk format and of the
// stream item format: never renumber.
const (
	Crash Consistency = 1
	App   Consistency = 2
)

// String is the kind's text: "crash", "app", "" for the zero value, and
// "kind(N)" for a value no encoding accepts.
func (k Consistency) String() string {
	switch k {
	case 0:
		return ""
	case Crash:
		return "crash"
	case App:
		return "app"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid says whether k is Crash or App.
func (k Consistency) Valid() bool { return k == Crash || k == App }

// letter is the kind's one-letter form in ids ('c', 'a').
func (k Consistency) letter() byte {
	if k == App {
		return 'a'
	}
	return 'c'
}

// ParseConsistency reads a kind's text; "" gives the zero value.
func ParseConsistency(s string) (Consistency, error) {
	switch s {
	case "":
		return 0, nil
	case "crash":
		return Crash, nil
	case "app":
		return App, nil
	}
	return 0, fmt.Errorf("proto: unknown consistency %q (want crash or app)", s)
}

// MarshalText encodes k as its text, so JSON catalogs keep "crash"/"app".
func (k Consistency) MarshalText() ([]byte, error) {
	if k != 0 && !k.Valid() {
		return nil, fmt.Errorf("proto: cannot encode consistency %d", uint8(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText decodes a kind's text.
func (k *Consistency) UnmarshalText(b []byte) error {
	c, err := ParseConsistency(string(b))
	if err != nil {
		return err
	}
	*k = c
	return nil
}
