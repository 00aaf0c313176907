package wscanister

import (
	"crypto/sha256"
	"fmt"
	"sort"

	"github.com/aviate-labs/agent-go/candid/idl"
	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/protocol"
)

// This file is the CDK (ic-websocket-cdk 0.4.1, state.rs / lib.rs / timers.rs) re-stated in Go:
// the same maps, the same order of effects and the same error strings. All functions run with
// Canister.mu held for writing unless they say otherwise; times are nanoseconds, as ic0.time.

// initialClientSequenceNum is the first sequence number expected from a client.
const initialClientSequenceNum = 1

// clientID is a comparable form of protocol.ClientKey for map keys.
type clientID struct {
	principal string // raw bytes
	nonce     uint64
}

func idOf(k protocol.ClientKey) clientID {
	return clientID{principal: string(k.ClientPrincipal.Raw), nonce: k.ClientNonce}
}

type registeredClient struct {
	key               protocol.ClientKey
	gateway           principal.Principal
	lastKeepAlive     uint64
	outgoingSeq       uint64 // last sequence number used towards the client
	expectedIncoming  uint64 // next sequence number expected from the client
	waitingKeepAlive  bool   // CLIENTS_WAITING_FOR_KEEP_ALIVE membership
	registrationOrder uint64 // ties the ack order to something stable, for reproducible tests
}

type queuedMessage struct {
	out       protocol.CanisterOutputMessage
	timestamp uint64
}

type registeredGateway struct {
	principal principal.Principal
	queue     []queuedMessage // FIFO, contiguous nonces
	nonce     uint64          // outgoing_message_nonce
	clients   uint64          // connected_clients_count
}

// wsState is everything the CDK keeps in its thread_locals.
type wsState struct {
	clients          map[clientID]*registeredClient
	byPrincipal      map[string]protocol.ClientKey // CURRENT_CLIENT_KEY_MAP
	gateways         map[string]*registeredGateway
	gatewaysToRemove map[string]uint64
	tree             rbTree
	registrations    uint64
	ackInterval      uint64 // ns
	deleteBatch      int
}

func newWSState(ackInterval uint64, deleteBatch int) *wsState {
	return &wsState{
		ackInterval:      ackInterval,
		deleteBatch:      deleteBatch,
		clients:          make(map[clientID]*registeredClient),
		byPrincipal:      make(map[string]protocol.ClientKey),
		gateways:         make(map[string]*registeredGateway),
		gatewaysToRemove: make(map[string]uint64),
	}
}

// errWs is a CDK error string: returned as variant Err, never as a trap.
type errWs string

func (e errWs) Error() string { return string(e) }

func errClientKeyNotConnected(k protocol.ClientKey) error {
	return errWs(fmt.Sprintf("Client with key %s doesn't have an open connection", k))
}

func errClientPrincipalNotConnected(p principal.Principal) error {
	return errWs(fmt.Sprintf("Client with principal %s doesn't have an open connection", p))
}

func errGatewayNotRegistered(p principal.Principal) error {
	return errWs(fmt.Sprintf("Gateway with principal %s is not registered", p))
}

// removal says why a client leaves, for the close hook; closeReason is set when the CDK sends a
// CloseMessage first.
type removal struct {
	closeReason *protocol.CloseMessageReason
	logReason   string
}

func reasonWrongSequence() *protocol.CloseMessageReason {
	return &protocol.CloseMessageReason{WrongSequenceNumber: new(idl.Null)}
}

func reasonKeepAliveTimeout() *protocol.CloseMessageReason {
	return &protocol.CloseMessageReason{KeepAliveTimeout: new(idl.Null)}
}

func reasonClosedByApplication() *protocol.CloseMessageReason {
	return &protocol.CloseMessageReason{ClosedByApplication: new(idl.Null)}
}

// hooks are the app callbacks on_open and on_close.
type hooks interface {
	onOpen(k protocol.ClientKey)
	onClose(k protocol.ClientKey, reason string)
}

func (s *wsState) clientByPrincipal(p principal.Principal) (protocol.ClientKey, error) {
	k, ok := s.byPrincipal[string(p.Raw)]
	if !ok {
		return protocol.ClientKey{}, errClientPrincipalNotConnected(p)
	}
	return k, nil
}

func (s *wsState) addClient(k protocol.ClientKey, gateway principal.Principal, now uint64) {
	s.registrations++
	s.byPrincipal[string(k.ClientPrincipal.Raw)] = k
	s.clients[idOf(k)] = &registeredClient{
		key:               k,
		gateway:           gateway,
		lastKeepAlive:     now,
		expectedIncoming:  initialClientSequenceNum,
		registrationOrder: s.registrations,
	}
	gk := string(gateway.Raw)
	delete(s.gatewaysToRemove, gk)
	g, ok := s.gateways[gk]
	if !ok {
		g = &registeredGateway{principal: gateway}
		s.gateways[gk] = g
	}
	g.clients++
}

// removeClient is the CDK's remove_client: optional CloseMessage, forget the client, and park its
// gateway for removal when it has no clients left.
func (s *wsState) removeClient(k protocol.ClientKey, why removal, now uint64, h hooks) {
	if why.closeReason != nil {
		// The CDK ignores a failure to queue the close message.
		_ = s.sendService(k, protocol.WebsocketServiceMessageContent{
			CloseMessage: &protocol.CanisterCloseMessageContent{Reason: *why.closeReason},
		}, now)
	}
	delete(s.byPrincipal, string(k.ClientPrincipal.Raw))
	c, ok := s.clients[idOf(k)]
	if !ok {
		return
	}
	delete(s.clients, idOf(k))
	gk := string(c.gateway.Raw)
	if g, ok := s.gateways[gk]; ok {
		if g.clients > 0 {
			g.clients--
		}
		if g.clients == 0 {
			s.gatewaysToRemove[gk] = now
		}
	}
	h.onClose(k, why.logReason)
}

// removeEmptyExpiredGateways drops gateways that have had no client for longer than the ack
// interval, together with their queues and certified keys.
func (s *wsState) removeEmptyExpiredGateways(now uint64) {
	for gk, addedAt := range s.gatewaysToRemove {
		if !olderThan(now, addedAt, s.ackInterval) {
			continue
		}
		delete(s.gatewaysToRemove, gk)
		if g, ok := s.gateways[gk]; ok {
			delete(s.gateways, gk)
			for _, m := range g.queue {
				s.tree.delete(m.out.Key)
			}
		}
	}
}

// olderThan reports now - then > age, treating a clock that went backwards as "not older".
func olderThan(now, then, age uint64) bool {
	return now > then && now-then > age
}

func (s *wsState) sendService(k protocol.ClientKey, m protocol.WebsocketServiceMessageContent, now uint64) error {
	b, err := protocol.EncodeServiceMessage(m)
	if err != nil {
		return err
	}
	return s.send(k, b, true, now)
}

// send is the CDK's _ws_send; deleteBatch and ackInterval come from the config.
func (s *wsState) send(k protocol.ClientKey, content []byte, isService bool, now uint64) error {
	c, ok := s.clients[idOf(k)]
	if !ok {
		return errClientKeyNotConnected(k)
	}
	g, ok := s.gateways[string(c.gateway.Raw)]
	if !ok {
		return errGatewayNotRegistered(c.gateway)
	}
	key := protocol.MessageKey(g.principal, g.nonce)
	g.nonce++
	c.outgoingSeq++
	body, err := protocol.EncodeWebsocketMessageCBOR(protocol.WebsocketMessage{
		ClientKey:        k,
		SequenceNum:      c.outgoingSeq,
		Timestamp:        now,
		IsServiceMessage: isService,
		Content:          content,
	})
	if err != nil {
		return err
	}
	s.deleteOldMessages(g, now)
	s.tree.insert(key, sha256.Sum256(body))
	g.queue = append(g.queue, queuedMessage{
		out:       protocol.CanisterOutputMessage{ClientKey: k, Key: key, Content: body},
		timestamp: now,
	})
	return nil
}

func (s *wsState) deleteOldMessages(g *registeredGateway, now uint64) {
	n := 0
	for n < s.deleteBatch && n < len(g.queue) && olderThan(now, g.queue[n].timestamp, s.ackInterval) {
		s.tree.delete(g.queue[n].out.Key)
		n++
	}
	if n == 0 {
		return
	}
	// Drop references so that the backing array does not pin old contents forever.
	for i := 0; i < n; i++ {
		g.queue[i] = queuedMessage{}
	}
	g.queue = g.queue[n:]
	if cap(g.queue) > 1024 && len(g.queue) < cap(g.queue)/4 {
		g.queue = append([]queuedMessage(nil), g.queue...)
	}
}

// messagesFrom returns the queue slice for ws_get_messages and whether it reaches the end.
// It only reads, so a query may call it with the read lock.
func (g *registeredGateway) messagesFrom(nonce uint64, max int) ([]queuedMessage, bool) {
	smallest := protocol.MessageKey(g.principal, nonce)
	start := sort.Search(len(g.queue), func(i int) bool { return g.queue[i].out.Key >= smallest })
	rest := g.queue[start:]
	if len(rest) > max {
		return rest[:max], false
	}
	return rest, true
}

// sortedClients returns the registered clients in registration order; the CDK iterates a HashMap,
// whose order is arbitrary, so any fixed order is as faithful and keeps tests reproducible.
func (s *wsState) sortedClients() []*registeredClient {
	out := make([]*registeredClient, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].registrationOrder < out[j].registrationOrder })
	return out
}
