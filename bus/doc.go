// Package bus is the bus contract the icws roles share over NATS JetStream:
//
//   - the name of every stream, bucket, subject, key, header and Nats-Msg-Id, each builder beside
//     its parser (names.go, and edge_names.go for names only edges use);
//   - the streams' and buckets' shape, created by Ensure and opened by Open (streams.go);
//   - the records kept in the buckets (names.go);
//   - Lease, the one lease type of every role, and IsConflict, the one test for a lost
//     compare-and-set write (lease.go, conflict.go);
//   - connecting to an external NATS server or cluster, or running one embedded (connect.go,
//     embedded.go).
package bus
