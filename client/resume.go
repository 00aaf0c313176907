package client

import (
	"github.com/icws/icws/protocol"
)

// The icws resume extension v1 (docs/RESUME.md); its frames and their codecs are in protocol.

// ResumeQueryParam opts a connection into the icws resume extension.
const ResumeQueryParam = protocol.ResumeQueryParam

// HeartbeatQueryParam asks the gateway for heartbeat frames (Config.HeartbeatSilence).
const HeartbeatQueryParam = protocol.HeartbeatQueryParam

// Close codes of icws (resume extension and edge policy).
const (
	CloseNotResumable     = protocol.CloseNotResumable
	CloseSlowClient       = protocol.CloseSlowClient
	CloseResumedElsewhere = protocol.CloseResumedElsewhere
	// CloseResumeElsewhere: the gateway process lost its message bus; the client resumes at once.
	CloseResumeElsewhere = protocol.CloseResumeElsewhere
	// CloseUnresponsive: the gateway got no answer to its ping; the client resumes.
	CloseUnresponsive = protocol.CloseUnresponsive
)

// isHeartbeat tells a heartbeat frame ({"icws_heartbeat": …}) from every other gateway frame. A
// canister message always carries a certificate, so only small frames are decoded for the check.
func isHeartbeat(frame []byte) bool {
	return len(frame) <= maxHeartbeatFrame && protocol.IsHeartbeat(frame)
}

// maxHeartbeatFrame is the largest frame checked for being a heartbeat: the frame is 17 bytes
// today; the margin leaves room for keys a later gateway may add.
const maxHeartbeatFrame = 256
