package broker

// Names used only between edges (owned by edge/, kept here so every shared name lives in broker/).

// subjectEdgeControlPrefix is the prefix of the per-edge control subjects (core NATS, not stored).
const subjectEdgeControlPrefix = "icws.edge."

// EdgeControlSubject is where other edges tell edge id to drop a socket whose session was resumed
// elsewhere: body = SessionKey, header HeaderTokenHash = the session's new token hash.
func EdgeControlSubject(id string) string { return subjectEdgeControlPrefix + id + ".drop" }

// EdgeLeaseKey is the leases-bucket key of an edge's liveness lease (LeaseRecord, renewed about
// every second). Sessions of an edge whose lease has expired are detached by another edge.
func EdgeLeaseKey(id string) string { return "edge." + id }

// HeaderTokenHash carries a session token hash on an edge control message.
const HeaderTokenHash = "Icws-Token-Hash"
