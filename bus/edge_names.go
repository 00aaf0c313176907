package bus

import "strings"

// Names used only between edges (owned by edge/, kept here so every shared name lives in bus/).

const (
	// subjectEdgeControlPrefix is the prefix of the per-edge control subjects (core NATS, not stored).
	subjectEdgeControlPrefix = "icws.edge."
	edgeControlDropSuffix    = ".drop"
	edgeLeasePrefix          = "edge."
)

// EdgeControlSubject is where other edges tell edge id to drop a socket whose session was resumed
// elsewhere: body = SessionKey, header HeaderTokenHash = the session's new token hash.
// icws.edge.<id>.drop.
func EdgeControlSubject(id string) string {
	return subjectEdgeControlPrefix + id + edgeControlDropSuffix
}

// ParseEdgeControlSubject reverses EdgeControlSubject, giving the edge's id.
func ParseEdgeControlSubject(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, subjectEdgeControlPrefix)
	id, drop := strings.CutSuffix(rest, edgeControlDropSuffix)
	if !ok || !drop || !validToken(id) {
		return "", badName("edge control subject", subject, "want icws.edge.<id>.drop")
	}
	return id, nil
}

// EdgeLeaseKey is the leases-bucket key of an edge's liveness lease: edge.<id>. Sessions of an
// edge whose lease has expired are detached by another edge.
func EdgeLeaseKey(id string) string { return edgeLeasePrefix + id }

// ParseEdgeLeaseKey reverses EdgeLeaseKey, giving the edge's id.
func ParseEdgeLeaseKey(key string) (string, error) {
	id, ok := strings.CutPrefix(key, edgeLeasePrefix)
	if !ok || !validToken(id) {
		return "", badName("edge lease key", key, "want edge.<id>")
	}
	return id, nil
}

// HeaderTokenHash carries a session token hash on an edge control message.
const HeaderTokenHash = "Icws-Token-Hash"
