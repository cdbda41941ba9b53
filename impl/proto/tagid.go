package proto

import (
	"fmt"
	"strconv"
	"strings"
)

// TagID names one round of a replication group's tag protocol: the
// bookmark every member inserts, and so the id of each member's recovery
// point and of the group point. Text: "<group>:<c|a>:<n>", n the master's
// round number (its clock in milliseconds, never repeating).
//
// A per-VM bookmark's id (BookmarkID) is "<machine>-<c|a>-<seq>": the two
// differ in the separator before the trailing number (':' here, '-'
// there), and a number has neither, so no machine name, however chosen —
// even its group's — makes a per-VM id parse as a tag.
type TagID struct {
	Group string
	Kind  Consistency
	N     uint64
}

// String is the tag id's text.
func (t TagID) String() string {
	return fmt.Sprintf("%s:%c:%d", t.Group, t.Kind.letter(), t.N)
}

// ParseTagID reads a tag id's text.
func ParseTagID(s string) (TagID, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 2 || s[i-2] != ':' {
		return TagID{}, fmt.Errorf("proto: %q is not a group tag id (<group>:<c|a>:<n>)", s)
	}
	var t TagID
	switch s[i-1] {
	case 'c':
		t.Kind = Crash
	case 'a':
		t.Kind = App
	default:
		return TagID{}, fmt.Errorf("proto: tag id %q: kind %q is not c or a", s, s[i-1])
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return TagID{}, fmt.Errorf("proto: tag id %q: round number is not a number", s)
	}
	t.Group, t.N = s[:i-2], n
	if t.Group == "" {
		return TagID{}, fmt.Errorf("proto: tag id %q has no group", s)
	}
	return t, nil
}

// IsTagOf says whether id is a tag id of group.
func IsTagOf(group, id string) bool {
	t, err := ParseTagID(id)
	return err == nil && group != "" && t.Group == group
}

// BookmarkID is the id of a machine's own (per-VM) bookmark of kind at
// change-log position seq: "<machine>-<c|a>-<seq>". It never parses as a
// TagID.
func BookmarkID(machine string, kind Consistency, seq uint64) string {
	return fmt.Sprintf("%s-%c-%d", machine, kind.letter(), seq)
}
