package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// KV reads through nats.go are direct gets, which any replica of a bucket answers, and a replica
// may lag: a follower applies a write only after the leader has acknowledged it, and a replica on a
// node cut off from its cluster not at all. Where a decision must not rest on such a copy (a record
// that seems missing, a cursor a poller resumes from), GetFromLeader asks the bucket's leader,
// which holds every acknowledged write: the message-get request of the bucket's stream, which only
// the stream leader answers. Each role's NATS user may send it for the buckets it reads so
// (deploy/nats/auth.conf).

// The parts of a KV bucket's stream that nats.go keeps to itself: the subjects of its keys, the
// header a delete or purge marker carries.
const (
	kvOperationHeader = "KV-Operation"
	kvOperationDelete = "DEL"
	kvOperationPurge  = "PURGE"
)

// kvLeaderGetSubject is the message-get request of a bucket's stream.
func kvLeaderGetSubject(bucket string) string { return "$JS.API.STREAM.MSG.GET.KV_" + bucket }

// leaderGetTimeout bounds a leader read whose context has no deadline, as nats.go bounds its own
// JetStream requests: a stream without a leader (an election) leaves the request unanswered.
const leaderGetTimeout = 5 * time.Second

// GetFromLeader reads key of bucket from the bucket's leader. A key never written, deleted or
// purged is (nil, 0, nil); otherwise it returns the value and its revision.
func GetFromLeader(ctx context.Context, nc *nats.Conn, bucket, key string) ([]byte, uint64, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, leaderGetTimeout)
		defer cancel()
	}
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + key})
	if err != nil {
		return nil, 0, fmt.Errorf("get %s %s from the leader: %w", bucket, key, err)
	}
	msg, err := nc.RequestWithContext(ctx, kvLeaderGetSubject(bucket), req)
	if err != nil {
		return nil, 0, fmt.Errorf("get %s %s from the leader: %w", bucket, key, err)
	}
	val, rev, err := decodeLeaderGet(msg.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("get %s %s from the leader: %w", bucket, key, err)
	}
	return val, rev, nil
}

// decodeLeaderGet reads a message-get answer: the message's value and sequence (its revision),
// nil for a missing key or a delete or purge marker.
func decodeLeaderGet(data []byte) ([]byte, uint64, error) {
	var resp struct {
		Message *struct {
			Seq    uint64 `json:"seq"`
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	switch err := json.Unmarshal(data, &resp); {
	case err != nil:
		return nil, 0, err
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, 0, nil
	case resp.Error != nil:
		return nil, 0, resp.Error
	case resp.Message == nil:
		return nil, 0, errors.New("an answer without a message")
	}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return nil, 0, err
		}
		if op := h.Get(kvOperationHeader); op == kvOperationDelete || op == kvOperationPurge {
			return nil, 0, nil
		}
	}
	if resp.Message.Data == nil {
		resp.Message.Data = []byte{} // written, empty: not the same as missing
	}
	return resp.Message.Data, resp.Message.Seq, nil
}
