package edge

import (
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/icws/icws/bus"
)

// sessionIndex mirrors the sessions bucket of the whole deployment (one KV watch per edge). The
// sweeper walks it to find sessions that need an action; admission control counts in it the
// sessions of a client principal and the canisters that have sessions. It lags the bucket by the
// watch's delay, so counts taken from it are approximate across edges (each edge adds its own
// exact local counts, see Edge.admit).
type sessionIndex struct {
	mu         sync.RWMutex
	entries    map[string]sessionIndexEntry
	principals map[string]int // client principal text → sessions
	canisters  map[string]int // canister id text → sessions
}

// stateCorrupt marks the index entry of a record that does not decode (bus.ErrCorruptSessionRecord):
// it counts for no principal or canister, and the sweeper deletes the record.
const stateCorrupt = "corrupt"

type sessionIndexEntry struct {
	state      string
	edge       string
	resumable  bool
	detachedAt time.Time
	principal  string
	canister   string
}

func newSessionIndex() *sessionIndex {
	return &sessionIndex{entries: map[string]sessionIndexEntry{}, principals: map[string]int{}, canisters: map[string]int{}}
}

// indexEntryOf keeps one copy of the values many sessions share (states, edge ids, canister
// ids): each decoded record brings its own.
func indexEntryOf(rec *bus.SessionRecord) sessionIndexEntry {
	return sessionIndexEntry{
		state: unique.Make(rec.State).Value(), edge: unique.Make(rec.Edge).Value(),
		resumable: rec.Resumable, detachedAt: rec.DetachedAt,
		principal: clientPrincipal(rec.Client), canister: unique.Make(rec.Canister).Value(),
	}
}

// clientPrincipal is the principal part of a client token "<principal>_<nonce>".
func clientPrincipal(client string) string {
	if i := strings.LastIndexByte(client, '_'); i > 0 {
		return client[:i]
	}
	return client
}

func (x *sessionIndex) put(key string, ent sessionIndexEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(key)
	x.entries[key] = ent
	if ent.state == stateCorrupt {
		return
	}
	x.principals[ent.principal]++
	x.canisters[ent.canister]++
}

func (x *sessionIndex) remove(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(key)
}

func (x *sessionIndex) removeLocked(key string) {
	old, ok := x.entries[key]
	if !ok {
		return
	}
	delete(x.entries, key)
	if old.state == stateCorrupt {
		return
	}
	decrement(x.principals, old.principal)
	decrement(x.canisters, old.canister)
}

func decrement(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// reset forgets everything: a new watch replays every current key, and keys deleted while no
// watch ran would otherwise stay forever.
func (x *sessionIndex) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	clear(x.entries)
	clear(x.principals)
	clear(x.canisters)
}

func (x *sessionIndex) get(key string) (sessionIndexEntry, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ent, ok := x.entries[key]
	return ent, ok
}

func (x *sessionIndex) principalSessions(p string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.principals[p]
}

// canisterStats reports whether canister has sessions and how many canisters have sessions.
func (x *sessionIndex) canisterStats(canister string) (known bool, count int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.canisters[canister] > 0, len(x.canisters)
}

// each calls fn for every entry until fn returns false. fn runs under the read lock: it must not
// do I/O or call back into the index.
func (x *sessionIndex) each(fn func(key string, ent sessionIndexEntry) bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for k, v := range x.entries {
		if !fn(k, v) {
			return
		}
	}
}
