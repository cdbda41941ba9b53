// Package csstore is the port for the configuration server's durable state:
// its machines (registration, policy, generation, state), policies,
// replication groups, jobs and alerts. One package per backend implements
// Store (csstore/sqlite: a SQLite file through a pure-Go driver) and passes
// the conformance suite csstore/csstoretest.
//
// The store keeps records, not the server's types: a Record is a kind, a
// key unique within the kind, and the configuration server's own encoding
// of the record (impl/configsrv owns and tests that encoding). The store's
// contract is about durability and atomicity:
//
//   - Apply writes a Batch in one transaction: after it returns nil every
//     put and delete of the batch is durable (it survives a crash of the
//     process or the machine); after it returns an error none of them
//     happened.
//   - Load returns every record, sorted by kind (in Kinds order) and then
//     by key, bytewise.
//
// A Store is used by one actor at a time, through Ops that the actor runs
// one after another (configsrv never has two store calls in flight), so
// implementations need not order concurrent calls.
package csstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Kind is a kind of record, stored apart from the others.
type Kind string

// The kinds of records.
const (
	KindMachine Kind = "machine" // key: machine name
	KindPolicy  Kind = "policy"  // key: policy name
	KindGroup   Kind = "group"   // key: replication group name
	KindJob     Kind = "job"     // key: job id, decimal
	KindAlert   Kind = "alert"   // key: alert id (its raising order), decimal
)

// Kinds are every kind, in the order Load returns them.
var Kinds = []Kind{KindMachine, KindPolicy, KindGroup, KindJob, KindAlert}

// Errors of every store.
var (
	// ErrInvalid: a batch names an unknown kind or an empty key; nothing
	// of the batch was written.
	ErrInvalid = errors.New("csstore: invalid record")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("csstore: store closed")
	// ErrNewerSchema: the database was written by a binary with a newer
	// schema than this one knows; it was not touched.
	ErrNewerSchema = errors.New("csstore: database schema is newer than this binary's")
	// ErrCorrupt: the file is not a database of this kind, or fails its
	// integrity check; it was not touched.
	ErrCorrupt = errors.New("csstore: database unreadable")
	// ErrInUse: another process (another configuration server) has the
	// database open; this one did not touch it.
	ErrInUse = errors.New("csstore: database in use by another process")
)

// Record is one durable record.
type Record struct {
	Kind Kind
	Key  string
	Data []byte // the owner's encoding; the store keeps it byte for byte
}

// Ref names a record.
type Ref struct {
	Kind Kind
	Key  string
}

// Ref is r's name.
func (r Record) Ref() Ref { return Ref{Kind: r.Kind, Key: r.Key} }

// Batch is what one Apply writes: Delete first, then Put (a later put of
// a key replaces an earlier one in the same batch). Deleting a key that
// does not exist is not an error.
type Batch struct {
	Put    []Record
	Delete []Ref
}

// Empty reports whether b writes nothing.
func (b Batch) Empty() bool { return len(b.Put) == 0 && len(b.Delete) == 0 }

// Store is the configuration server's durable state.
type Store interface {
	// Load returns every record, sorted by kind (Kinds order) and key.
	Load(ctx context.Context) ([]Record, error)
	// Apply writes b atomically and durably (see the package doc).
	Apply(ctx context.Context, b Batch) error
	// Close releases the store; later calls return ErrClosed.
	Close() error
}

// Validate checks every kind and key of b, so that a store can refuse a
// batch before it writes any of it.
func (b Batch) Validate() error {
	check := func(k Kind, key string) error {
		if !slices.Contains(Kinds, k) {
			return fmt.Errorf("%w: unknown kind %q (kinds: %s)", ErrInvalid, k, kindList())
		}
		if key == "" {
			return fmt.Errorf("%w: %s with an empty key", ErrInvalid, k)
		}
		return nil
	}
	for _, r := range b.Delete {
		if err := check(r.Kind, r.Key); err != nil {
			return err
		}
	}
	for _, r := range b.Put {
		if err := check(r.Kind, r.Key); err != nil {
			return err
		}
	}
	return nil
}

// KindIndex is k's position in Kinds, -1 when it is not one.
func KindIndex(k Kind) int { return slices.Index(Kinds, k) }

// Sort sorts records as Load returns them.
func Sort(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		if d := KindIndex(a.Kind) - KindIndex(b.Kind); d != 0 {
			return d
		}
		return strings.Compare(a.Key, b.Key)
	})
}

func kindList() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
