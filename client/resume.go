package client

import (
	"github.com/icws/icws/protocol"
)

// The icws resume extension v1 (docs/RESUME.md); its frames and their codecs are in protocol.

// ResumeQueryParam opts a connection into the icws resume extension.
const ResumeQueryParam = protocol.ResumeQueryParam

// Close codes of icws (resume extension and edge policy).
const (
	CloseNotResumable     = protocol.CloseNotResumable
	CloseSlowClient       = protocol.CloseSlowClient
	CloseResumedElsewhere = protocol.CloseResumedElsewhere
)
