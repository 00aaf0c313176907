package edge

import "errors"

// reasonRateExceeded closes (1008) a connection that sends more than MaxClientRate messages per
// second beyond its MaxClientBurst: one client must not flood ICWS_IN.
const (
	reasonRateExceeded     = "icws: client message rate exceeded"
	reasonByteRateExceeded = "icws: client byte rate exceeded"
)

// errRateExceeded ends the read of a connection whose pings exceeded the message rate.
var errRateExceeded = errors.New(reasonRateExceeded)
