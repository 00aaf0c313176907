module github.com/icws/icws

go 1.26.8

require (
	github.com/aviate-labs/agent-go v0.8.0
	github.com/fxamacker/cbor/v2 v2.10.0
)

require (
	github.com/aviate-labs/leb128 v0.3.0 // indirect
	github.com/x448/float16 v0.8.4 // indirect
)
