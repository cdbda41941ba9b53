package agent

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Gate is the write gate of the multi-VM tag protocol: the part of the
// filter driver that holds the guest's new writes while a round prepares
// and commits its tag. The Filter embeds one, so a Filter is also the
// simulated machine's sim/disk Gate (Admit, SetReleaseHook).
//
// The gate is kernel state: it outlives the agent (HoldTag tells a
// restarted agent which tag it must revoke) and it opens by itself at its
// hold deadline (Expire), so no write is held longer than the phase
// timeouts allow whatever fails. It has its own mutex (the guest's write
// path asks Admit from another goroutine under runtime.Real); when both
// are taken the filter's comes first (InsertBookmark), and the gate never
// calls into the filter holding its own (Expire revokes after unlocking).
type Gate struct {
	mu        sync.Mutex
	holding   bool
	holdTag   string    // the bookmark inserted while holding
	holdUntil time.Time // when the gate opens by itself (zero: never)
	expired   int64     // holds the gate's own deadline ended
	// revokeFailures counts Expire calls whose revoke failed.
	revokeFailures int64
	releaseHook    func()
	// revoke appends a revoke record of a tag to the change log; the
	// filter sets it. Expire calls it without the gate's mutex.
	revoke func(id string) (uint64, error)
}

// tagged records that bookmark id was inserted: while the gate holds, it
// is the tag a restarted agent (or the deadline) must revoke.
func (g *Gate) tagged(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holding {
		g.holdTag = id
	}
}

// Hold closes the write gate: from now on Admit returns false, and the
// guest's write path queues new writes instead of issuing them (a real
// driver pends the IRPs). Writes already past Admit finish: a real driver
// lets them complete before its holder acknowledges the hold; the
// simulated guest admits and captures in one step. Capture itself never
// blocks and keeps logging what reaches it. Holding twice is holding once.
func (g *Gate) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.holding {
		g.holding, g.holdTag = true, ""
	}
}

// Release opens the write gate: Admit returns true again. Then, outside
// the gate's mutex (the hook issues writes, which Capture), it calls the
// release hook so that the write path resumes its queued writes. Releasing
// an open gate does nothing.
func (g *Gate) Release() {
	g.mu.Lock()
	was, hook := g.holding, g.releaseHook
	g.holding, g.holdTag, g.holdUntil = false, "", time.Time{}
	g.mu.Unlock()
	if was && hook != nil {
		hook()
	}
}

// SetHoldDeadline sets when a closed gate opens by itself. The member
// agent sets it when it holds (prepare + TagTimeouts.Hold()); it is the
// driver's own timer, which must fire even when the agent process is down,
// so that no write is held longer than the phase timeouts allow whatever
// fails. The guest's write path (or its timer) calls Expire.
func (g *Gate) SetHoldDeadline(t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holding {
		g.holdUntil = t
	}
}

// HoldDeadline is when the closed gate opens by itself (zero: the gate is
// open, or has no deadline).
func (g *Gate) HoldDeadline() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holdUntil
}

// Expire opens a gate whose deadline has passed at now: the tag inserted
// while holding, if any, gets a revoke record (the round's outcome is
// unknown, so the tag must not become a point), and the gate is released.
// It reports the revoked tag and whether it expired anything.
//
// Safety before liveness: when the revoke record cannot be appended (err,
// ErrRevokeFailed wrapping the log's error), the gate keeps holding — the
// tag stays revocable and no write is admitted after it unrevoked — and
// the caller must call Expire again later (the filter driver's timer
// retries; an agent that restarts revokes and releases too).
// RevokeFailures counts such attempts.
func (g *Gate) Expire(now time.Time) (revoked string, expired bool, err error) {
	g.mu.Lock()
	if !g.holding || g.holdUntil.IsZero() || now.Before(g.holdUntil) {
		g.mu.Unlock()
		return "", false, nil
	}
	tag := g.holdTag
	revoke := g.revoke
	g.mu.Unlock()
	if tag != "" && revoke != nil {
		if _, err := revoke(tag); err != nil {
			g.mu.Lock()
			g.revokeFailures++
			g.mu.Unlock()
			return tag, false, fmt.Errorf("%w %s: %w", ErrRevokeFailed, tag, err)
		}
	}
	g.mu.Lock()
	g.expired++
	g.mu.Unlock()
	g.Release()
	return tag, true, nil
}

// ErrRevokeFailed: the gate's deadline passed but the tag it holds for
// could not be revoked; the gate still holds.
var ErrRevokeFailed = errors.New("agent: hold deadline: cannot revoke tag")

// RevokeFailures is the number of Expire calls that could not revoke the
// held tag (and so kept holding).
func (g *Gate) RevokeFailures() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.revokeFailures
}

// Expired is the number of holds the gate's own deadline ended.
func (g *Gate) Expired() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.expired
}

// Admit says whether the guest's write path may issue a new write now;
// false means the gate holds: queue the write until the release hook runs.
func (g *Gate) Admit() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.holding
}

// SetReleaseHook registers how the guest's write path resumes its queued
// writes; Release calls it. nil removes it.
func (g *Gate) SetReleaseHook(hook func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseHook = hook
}

// Holding says whether the write gate is closed.
func (g *Gate) Holding() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holding
}

// HoldTag is the id of the bookmark inserted while the gate holds ("" when
// none, or when the gate is open). The gate is kernel state that outlives
// the agent: an agent restarted mid-round revokes this tag before it
// releases, since it no longer knows how the round ended.
func (g *Gate) HoldTag() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holdTag
}
