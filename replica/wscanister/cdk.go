package wscanister

import (
	"fmt"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/icws/icws/protocol"
)

// The CDK's public entry points (lib.rs). Each returns nil for Ok, an errWs for Err (a reply; the
// state changes made so far are kept, as on the IC), or a *trapError (the replica rolls nothing
// back for us, so a trap must happen before the first state change).

type trapError struct{ msg string }

func (t *trapError) Error() string { return t.msg }

// appHooks are the demo app's callbacks plus the test log.
type appHooks interface {
	hooks
	onKeepAlive(k protocol.ClientKey)
	onSequenceError(k protocol.ClientKey)
	// onMessage handles an app message already decoded from the content.
	onMessage(k protocol.ClientKey, m protocol.AppMessage, now uint64)
	onIncoming(k protocol.ClientKey, seq uint64)
}

func (s *wsState) wsOpen(caller principal.Principal, args protocol.CanisterWsOpenArguments, now uint64, h appHooks) error {
	if caller.Equal(principal.AnonymousID) {
		return errWs("Anonymous principal is not allowed")
	}
	k := protocol.ClientKey{ClientPrincipal: caller, ClientNonce: args.ClientNonce}
	if _, ok := s.clients[idOf(k)]; ok {
		return errWs(fmt.Sprintf("Client with key %s already has an open connection", k))
	}
	// One connection per principal: the old key goes silently (on_close, no CloseMessage).
	if old, err := s.clientByPrincipal(caller); err == nil {
		s.removeClient(old, removal{logReason: "replaced"}, now, h)
	}
	s.addClient(k, args.GatewayPrincipal, now)
	if err := s.sendService(k, protocol.WebsocketServiceMessageContent{
		OpenMessage: &protocol.CanisterOpenMessageContent{ClientKey: k},
	}, now); err != nil {
		return err
	}
	h.onOpen(k)
	return nil
}

func (s *wsState) wsClose(caller principal.Principal, args protocol.CanisterWsCloseArguments, now uint64, h appHooks) error {
	if _, ok := s.gateways[string(caller.Raw)]; !ok {
		return errGatewayNotRegistered(caller)
	}
	c, ok := s.clients[idOf(args.ClientKey)]
	if !ok {
		return errClientKeyNotConnected(args.ClientKey)
	}
	if !c.gateway.Equal(caller) {
		return errWs(fmt.Sprintf("Client with key %s was not registered to gateway %s", args.ClientKey, caller))
	}
	s.removeClient(args.ClientKey, removal{logReason: "ws_close"}, now, h)
	return nil
}

func (s *wsState) wsMessage(caller principal.Principal, msg protocol.WebsocketMessage, now uint64, h appHooks) error {
	registered, err := s.clientByPrincipal(caller)
	if err != nil {
		return err
	}
	if !msg.ClientKey.Equal(registered) {
		return errWs(fmt.Sprintf("Client with principal %s has a different key than the one used in the message", msg.ClientKey.ClientPrincipal))
	}
	c, ok := s.clients[idOf(registered)]
	if !ok {
		return errWs(fmt.Sprintf("Expected incoming message to client num not initialized for client key %s", registered))
	}
	if msg.SequenceNum != c.expectedIncoming {
		expected := c.expectedIncoming
		h.onSequenceError(registered)
		s.removeClient(registered, removal{closeReason: reasonWrongSequence(), logReason: "WrongSequenceNumber"}, now, h)
		return errWs(fmt.Sprintf("Expected incoming sequence number %d but got %d", expected, msg.SequenceNum))
	}
	var app protocol.AppMessage
	if !msg.IsServiceMessage {
		// The demo app's on_message decodes with unwrap(): bad content traps, which on the IC
		// also undoes the sequence-number increment. Decoding first gives the same outcome.
		if app, err = protocol.DecodeAppMessage(msg.Content); err != nil {
			return &trapError{msg: fmt.Sprintf("demo app: decode AppMessage from client %s: %v", registered, err)}
		}
	}
	c.expectedIncoming++
	h.onIncoming(registered, msg.SequenceNum)
	if msg.IsServiceMessage {
		svc, err := protocol.DecodeServiceMessage(msg.Content)
		if err != nil {
			return errWs(fmt.Sprintf("Error decoding service message content: %v", err))
		}
		if svc.KeepAliveMessage == nil {
			return errWs("Invalid service message")
		}
		c.lastKeepAlive = now
		h.onKeepAlive(registered)
		return nil
	}
	h.onMessage(registered, app, now)
	return nil
}

// sendAcks is the ack timer callback: an AckMessage to every client, which then waits for a
// keep-alive.
func (s *wsState) sendAcks(now uint64) {
	for _, c := range s.sortedClients() {
		err := s.sendService(c.key, protocol.WebsocketServiceMessageContent{
			AckMessage: &protocol.CanisterAckMessageContent{LastIncomingSequenceNum: c.expectedIncoming - 1},
		}, now)
		if err == nil {
			c.waitingKeepAlive = true
		}
	}
}

// checkKeepAlive is the keep-alive timer callback.
func (s *wsState) checkKeepAlive(now uint64, keepAliveTimeout uint64, h appHooks) {
	s.removeEmptyExpiredGateways(now)
	var expired []protocol.ClientKey
	for _, c := range s.sortedClients() {
		if c.waitingKeepAlive && olderThan(now, c.lastKeepAlive, keepAliveTimeout) {
			expired = append(expired, c.key)
		}
	}
	for _, k := range expired {
		s.removeClient(k, removal{closeReason: reasonKeepAliveTimeout(), logReason: "KeepAliveTimeout"}, now, h)
	}
}

// closeClient is the CDK's close(principal), keyed here by the exact client key.
func (s *wsState) closeClient(k protocol.ClientKey, now uint64, h appHooks) error {
	current, err := s.clientByPrincipal(k.ClientPrincipal)
	if err != nil {
		return err
	}
	if !current.Equal(k) {
		return errClientKeyNotConnected(k)
	}
	s.removeClient(k, removal{closeReason: reasonClosedByApplication(), logReason: "ClosedByApplication"}, now, h)
	return nil
}

// sendApp is the CDK's send(principal, bytes) for an AppMessage, keyed by the exact client key.
func (s *wsState) sendApp(k protocol.ClientKey, m protocol.AppMessage, now uint64) error {
	current, err := s.clientByPrincipal(k.ClientPrincipal)
	if err != nil {
		return err
	}
	if !current.Equal(k) {
		return errClientKeyNotConnected(k)
	}
	b, err := protocol.EncodeAppMessage(m)
	if err != nil {
		return err
	}
	return s.send(k, b, false, now)
}
