package replica

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aviate-labs/agent-go/principal"
	"github.com/fxamacker/cbor/v2"

	"github.com/icws/icws/internal/certauth"
	"github.com/icws/icws/internal/stagetrace"
	"github.com/icws/icws/protocol"
)

const implVersion = "icws-replica-0.1"

// Handler returns the replica's HTTP interface: /api/v2/status, /api/v3/canister/<ecid>/call,
// /api/v2/canister/<ecid>/{call,query,read_state} (and v3 aliases of query and read_state), and
// the TEST-ONLY control hooks under /_/control/.
func (r *Replica) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/status", r.handleStatus)
	mux.HandleFunc("POST /api/v3/canister/{ecid}/call", r.handleCallV3)
	mux.HandleFunc("POST /api/v2/canister/{ecid}/call", r.handleCallV2)
	mux.HandleFunc("POST /api/v2/canister/{ecid}/query", r.handleQuery)
	mux.HandleFunc("POST /api/v3/canister/{ecid}/query", r.handleQuery)
	mux.HandleFunc("POST /api/v2/canister/{ecid}/read_state", r.handleReadState)
	mux.HandleFunc("POST /api/v3/canister/{ecid}/read_state", r.handleReadState)
	mux.HandleFunc("POST /api/v2/subnet/{sid}/read_state", r.handleSubnetReadState)
	mux.HandleFunc("POST /api/v3/subnet/{sid}/read_state", r.handleSubnetReadState)
	mux.HandleFunc(controlPrefix+"{target}/", r.handleControl)
	return r.middleware(mux)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// controlPrefix is where the TEST-ONLY hooks live.
const controlPrefix = "/_/control/"

// middleware adds CORS to the IC interface (a browser page may talk to the replica directly, as it
// does to the IC), request logging and a last-resort recovery so bad input never takes the process
// down. The TEST-ONLY hooks get no CORS: no web page may drive them.
func (r *Replica) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		if !strings.HasPrefix(req.URL.Path, controlPrefix) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", "*")
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Content-Type")
			h.Set("Access-Control-Max-Age", "86400")
			if req.Method == http.MethodOptions {
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				r.log.Error("replica handler panicked", "path", req.URL.Path, "panic", p)
				if rec.status == 0 {
					textError(rec, http.StatusInternalServerError, "internal error")
				}
			}
			r.log.Debug("replica request", "method", req.Method, "path", req.URL.Path,
				"status", rec.status, "duration", time.Since(start))
		}()
		next.ServeHTTP(rec, req)
	})
}

// httpError is a refusal answered as text/plain with the IC's status code.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d: %s", e.status, e.msg) }

func badRequest(format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func textError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func writeCBOR(w http.ResponseWriter, status int, v any) {
	body, err := cbor.Marshal(v)
	if err != nil {
		textError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/cbor")
	w.WriteHeader(status)
	_, _ = w.Write(append(append([]byte{}, protocol.SelfDescribeTag...), body...))
}

// readRequest parses the effective canister id and reads the body within the size limit.
func (r *Replica) readRequest(w http.ResponseWriter, req *http.Request) (principal.Principal, []byte, bool) {
	ecid, err := principal.Decode(req.PathValue("ecid"))
	if err != nil {
		textError(w, http.StatusBadRequest, fmt.Sprintf("Could not parse effective canister id %q: %v", req.PathValue("ecid"), err))
		return principal.Principal{}, nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			textError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than the maximum of %d bytes.", r.cfg.MaxRequestBytes))
		} else {
			textError(w, http.StatusBadRequest, "Could not read request body: "+err.Error())
		}
		return principal.Principal{}, nil, false
	}
	return ecid, body, true
}

// readValidated reads a request of type typ to the effective canister in the path and validates
// it; when it fails it has answered.
func (r *Replica) readValidated(w http.ResponseWriter, req *http.Request, typ string) (*protocol.Request, principal.Principal, bool) {
	ecid, body, ok := r.readRequest(w, req)
	if !ok {
		return nil, principal.Principal{}, false
	}
	in, ok := r.validate(w, body, typ, ecid)
	return in, ecid, ok
}

// validate verifies an envelope as the IC's ingress validator does, checking that a call or query
// is for the effective canister id of the URL before its signatures (as the IC does); every
// refusal is a 400 with the IC's wording.
func (r *Replica) validate(w http.ResponseWriter, body []byte, typ string, ecid principal.Principal) (*protocol.Request, bool) {
	in, err := r.ingress.VerifyEnvelope(body, typ, time.Now(), func(in *protocol.Request) error {
		if typ != protocol.RequestReadState && !in.Canister.Equal(ecid) {
			return &protocol.IngressError{Kind: protocol.IngressRefused, Msg: fmt.Sprintf(
				"Specified CanisterId %s does not match effective canister id in URL %s", in.Canister, ecid)}
		}
		return nil
	})
	if err != nil {
		r.log.Debug("request refused", "type", typ, "status", http.StatusBadRequest, "reason", err.Error())
		textError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return in, true
}

func (r *Replica) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeCBOR(w, http.StatusOK, map[string]any{
		"root_key":              r.keys.RootKey(),
		"impl_version":          implVersion,
		"replica_health_status": "healthy",
		"certified_height":      r.height.Load(),
	})
}

// handleCallV3 executes a call and answers with its certified outcome, or 202 if that takes
// longer than SyncCallTimeout (the agent then polls read_state).
func (r *Replica) handleCallV3(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	in, _, ok := r.readValidated(w, req, "call")
	if !ok {
		return
	}
	stagetrace.Mark(req.Context(), r.log, stagetrace.ReplicaCallValidated)
	cs := r.canister(in.Canister)
	if rej := refusedCall(cs, in.Canister); rej != nil {
		resp := rejectFields(rej)
		resp["status"] = "non_replicated_rejection"
		writeCBOR(w, http.StatusOK, resp)
		return
	}
	rs := r.submit(in, cs)
	timer := time.NewTimer(r.cfg.SyncCallTimeout - time.Since(start))
	defer timer.Stop()
	select {
	case <-rs.done:
	case <-timer.C:
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "Request timed out waiting for certification; poll read_state for its status.")
		return
	case <-req.Context().Done():
		textError(w, http.StatusServiceUnavailable, "The replica is shutting down or the client went away.")
		return
	}
	stagetrace.Mark(req.Context(), r.log, stagetrace.ReplicaExecuted)
	cert, err := r.statusCertificate(rs, in.ID)
	if err != nil {
		textError(w, http.StatusInternalServerError, "certify: "+err.Error())
		return
	}
	stagetrace.Mark(req.Context(), r.log, stagetrace.ReplicaCertified)
	writeCBOR(w, http.StatusOK, map[string]any{"status": "replied", "certificate": cert})
}

// handleCallV2 accepts a call for asynchronous execution.
func (r *Replica) handleCallV2(w http.ResponseWriter, req *http.Request) {
	in, _, ok := r.readValidated(w, req, "call")
	if !ok {
		return
	}
	cs := r.canister(in.Canister)
	if rej := refusedCall(cs, in.Canister); rej != nil {
		writeCBOR(w, http.StatusOK, rejectFields(rej))
		return
	}
	r.submit(in, cs)
	w.WriteHeader(http.StatusAccepted)
}

// refusedCall is the IC's rejection of a message to a missing or stopped canister, before any
// execution; nil when the canister takes messages.
func refusedCall(cs *canisterState, id principal.Principal) *Reject {
	switch {
	case cs == nil:
		return canisterNotFound(id)
	case cs.stopped.Load():
		return canisterStopped(id)
	}
	return nil
}

// handleQuery executes a query and answers with a node-signed response (unsigned with
// NoQuerySignatures).
func (r *Replica) handleQuery(w http.ResponseWriter, req *http.Request) {
	in, _, ok := r.readValidated(w, req, "query")
	if !ok {
		return
	}
	stagetrace.Mark(req.Context(), r.log, stagetrace.ReplicaQueryValidated)
	var reply []byte
	var rej *Reject
	cs := r.canister(in.Canister)
	if rej = refusedCall(cs, in.Canister); rej == nil {
		call := Call{
			Caller:          in.Sender,
			Method:          in.Method,
			Arg:             in.Arg,
			Time:            r.now(),
			DataCertificate: func() ([]byte, error) { return r.dataCertificate(cs) },
		}
		reply, rej = invoke(cs.id, func() ([]byte, error) { return cs.impl.Query(req.Context(), call) })
	}
	ts := uint64(r.now().UnixNano())
	resp := map[string]any{}
	signed := map[string]any{"timestamp": ts, "request_id": in.ID[:]}
	if rej != nil {
		resp["status"], signed["status"] = statusRejected, statusRejected
		for k, v := range rejectFields(rej) {
			resp[k], signed[k] = v, v
		}
	} else {
		resp["status"], signed["status"] = statusReplied, statusReplied
		resp["reply"] = map[string]any{"arg": reply}
		signed["reply"] = map[string]any{"arg": reply}
	}
	h, err := protocol.HashOfMap(signed)
	if err != nil {
		textError(w, http.StatusInternalServerError, "hash response: "+err.Error())
		return
	}
	if !r.cfg.NoQuerySignatures {
		sig := r.keys.SignQueryAnswer(h)
		if r.corruptQuerySigs.Load() {
			sig[len(sig)-1] ^= 0x01
		}
		resp["signatures"] = []map[string]any{{"timestamp": ts, "signature": sig, "identity": r.keys.NodeID().Raw}}
	}
	stagetrace.Mark(req.Context(), r.log, stagetrace.ReplicaQueryAnswered)
	writeCBOR(w, http.StatusOK, resp)
}

// handleReadState certifies the requested paths, authorised as the IC's read_state endpoint does.
func (r *Replica) handleReadState(w http.ResponseWriter, req *http.Request) {
	in, ecid, ok := r.readValidated(w, req, "read_state")
	if !ok {
		return
	}
	t := certauth.Tree{}
	var statusID []byte
	for _, path := range in.Paths {
		if herr := r.addPath(t, path, ecid, in, &statusID); herr != nil {
			r.log.Debug("read_state refused", "status", herr.status, "reason", herr.msg)
			textError(w, herr.status, herr.msg)
			return
		}
	}
	r.writeCertificate(w, t)
}

// handleSubnetReadState serves read_state of a subnet: time and subnet/... only.
func (r *Replica) handleSubnetReadState(w http.ResponseWriter, req *http.Request) {
	sid, err := principal.Decode(req.PathValue("sid"))
	if err != nil || !r.isSubnet(sid.Raw) {
		textError(w, http.StatusNotFound, fmt.Sprintf("Subnet %s not found", req.PathValue("sid")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxRequestBytes))
	if err != nil {
		textError(w, http.StatusRequestEntityTooLarge, "Could not read request body: "+err.Error())
		return
	}
	in, ok := r.validate(w, body, "read_state", sid)
	if !ok {
		return
	}
	t := certauth.Tree{}
	for _, path := range in.Paths {
		if len(path) == 0 || (string(path[0]) != "time" && string(path[0]) != "subnet") {
			textError(w, http.StatusNotFound, "Invalid path requested.")
			return
		}
		if herr := r.addPath(t, path, sid, in, nil); herr != nil {
			textError(w, herr.status, herr.msg)
			return
		}
	}
	r.writeCertificate(w, t)
}

// writeCertificate answers a read_state with t and the current time, certified.
func (r *Replica) writeCertificate(w http.ResponseWriter, t certauth.Tree) {
	t["time"] = certauth.TimeLeaf(r.certTime())
	cert, err := r.certify(t)
	if err != nil {
		textError(w, http.StatusInternalServerError, "certify: "+err.Error())
		return
	}
	writeCBOR(w, http.StatusOK, map[string][]byte{"certificate": cert})
}

// rejectFields are the reject_code, reject_message and error_code of an answer that rejects.
func rejectFields(rj *Reject) map[string]any {
	return map[string]any{
		"reject_code":    uint64(rj.Code),
		"reject_message": rj.Message,
		"error_code":     rj.ErrorCode,
	}
}

func invalidPath() *httpError {
	return &httpError{status: http.StatusNotFound, msg: "Invalid path requested."}
}

func (r *Replica) addPath(t certauth.Tree, path [][]byte, ecid principal.Principal, in *protocol.Request, statusID *[]byte) *httpError {
	if len(path) == 0 {
		return invalidPath()
	}
	switch string(path[0]) {
	case "time":
		if len(path) != 1 {
			return invalidPath()
		}
	case "api_boundary_nodes":
		// Allowed; the simulator has none, so the answer holds nothing under it.
		if len(path) > 3 {
			return invalidPath()
		}
	case "subnet":
		if !validSubnetPath(path) {
			return invalidPath()
		}
		if len(path) >= 2 && !r.isSubnet(path[1]) {
			return nil // unknown subnet: absent
		}
		r.keys.AddSubnet(t)
	case "request_status":
		return r.addRequestStatus(t, path, in, statusID)
	case "canister":
		if len(path) < 3 {
			return invalidPath()
		}
		switch {
		case len(path) == 3 && (string(path[2]) == "controllers" || string(path[2]) == "module_hash"):
		case len(path) == 4 && string(path[2]) == "metadata":
		default:
			return invalidPath()
		}
		if !bytes.Equal(path[1], ecid.Raw) {
			return badRequest("Effective canister id in URL %s does not match requested canister id: %s.", ecid, principal.Principal{Raw: path[1]})
		}
		cs := r.canister(ecid)
		if cs == nil {
			return nil
		}
		c := t.Sub([]byte("canister")).Sub(ecid.Raw)
		switch string(path[2]) {
		case "controllers":
			controllers, _ := cbor.Marshal([][]byte{})
			c["controllers"] = controllers
		case "module_hash":
			h := sha256.Sum256(append([]byte("icws replica canister "), ecid.Raw...))
			c["module_hash"] = h[:]
		case "metadata":
			if mp, ok := cs.impl.(MetadataProvider); ok {
				if data, ok := mp.Metadata(string(path[3])); ok {
					c.Sub([]byte("metadata"))[string(path[3])] = data
				}
			}
		}
	default:
		return invalidPath()
	}
	return nil
}

func validSubnetPath(path [][]byte) bool {
	switch len(path) {
	case 1, 2:
		return true
	case 3:
		s := string(path[2])
		return s == "public_key" || s == "canister_ranges" || s == "node"
	case 4:
		return string(path[2]) == "node"
	case 5:
		return string(path[2]) == "node" && string(path[4]) == "public_key"
	}
	return false
}

func (r *Replica) isSubnet(id []byte) bool {
	for _, sid := range r.keys.SubnetIDs() {
		if bytes.Equal(sid.Raw, id) {
			return true
		}
	}
	return false
}

func (r *Replica) addRequestStatus(t certauth.Tree, path [][]byte, in *protocol.Request, statusID *[]byte) *httpError {
	switch len(path) {
	case 2:
	case 3:
		switch string(path[2]) {
		case "status", "reply", "reject_code", "reject_message", "error_code":
		default:
			return invalidPath()
		}
	default:
		return invalidPath()
	}
	id := path[1]
	if len(id) != 32 {
		return badRequest("Invalid request id in path: %d bytes, want 32.", len(id))
	}
	if *statusID != nil && !bytes.Equal(*statusID, id) {
		return badRequest("Can only request a single request ID in request_status paths.")
	}
	*statusID = id
	r.mu.Lock()
	rs := r.requests[protocol.RequestID(id)]
	r.mu.Unlock()
	if rs == nil {
		return nil
	}
	if !rs.sender.Equal(in.Sender) {
		return &httpError{status: http.StatusForbidden, msg: "Request IDs must be for requests signed by the caller."}
	}
	if !in.TargetAllowed(rs.canister) {
		return &httpError{status: http.StatusForbidden, msg: fmt.Sprintf("Request ID %x is for canister %s, which is not one of the delegation targets.", id, rs.canister)}
	}
	rs.addTo(t, protocol.RequestID(id))
	return nil
}

// handleControl serves TEST-ONLY hooks: /_/control/replica/ (when Config.TestHooks) and each
// ControlProvider canister's handler at /_/control/<canister id>/ (when Config.CanisterControl).
// A request with an Origin header comes from a browser (every cross-origin request and every
// POST carries one): it is refused, so a page the developer visits cannot drive the hooks even
// with requests that need no CORS pre-flight.
func (r *Replica) handleControl(w http.ResponseWriter, req *http.Request) {
	if req.Header.Get("Origin") != "" {
		textError(w, http.StatusForbidden, "the test control API does not serve browsers (request has an Origin)")
		return
	}
	target := req.PathValue("target")
	prefix := controlPrefix + target
	if target == "replica" {
		if !r.cfg.TestHooks {
			textError(w, http.StatusNotFound, "test hooks are disabled (Config.TestHooks)")
			return
		}
		http.StripPrefix(prefix, http.HandlerFunc(r.replicaControl)).ServeHTTP(w, req)
		return
	}
	if !r.cfg.CanisterControl {
		textError(w, http.StatusNotFound, "the canister control API is disabled (ICWS_REPLICA_CONTROL, Config.CanisterControl)")
		return
	}
	id, err := principal.Decode(target)
	if err != nil {
		textError(w, http.StatusNotFound, "no such control target")
		return
	}
	cs := r.canister(id)
	if cs == nil {
		textError(w, http.StatusNotFound, fmt.Sprintf("Canister %s not found", id))
		return
	}
	cp, ok := cs.impl.(ControlProvider)
	if !ok {
		textError(w, http.StatusNotFound, fmt.Sprintf("Canister %s has no control hooks", id))
		return
	}
	http.StripPrefix(prefix, cp.ControlHandler()).ServeHTTP(w, req)
}

// replicaControl: POST /corrupt?certificates=<bool>&query_signatures=<bool> switches corruption of
// every certificate (read_state, v3 call, data certificates) and of query signatures; GET /corrupt
// reports the switches; POST /canister-signature signs as an Internet Identity user
// (canisterSignature). TEST ONLY.
func (r *Replica) replicaControl(w http.ResponseWriter, req *http.Request) {
	switch req.URL.Path {
	case "/corrupt":
	case "/stop", "/start":
		r.stopControl(w, req)
		return
	case "/canister-signature":
		r.canisterSignature(w, req)
		return
	default:
		textError(w, http.StatusNotFound, "unknown control path")
		return
	}
	if req.Method == http.MethodPost {
		for name, sw := range map[string]interface{ Store(bool) }{
			"certificates":     &r.corruptCerts,
			"query_signatures": &r.corruptQuerySigs,
		} {
			v := req.URL.Query().Get(name)
			if v == "" {
				continue
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				textError(w, http.StatusBadRequest, fmt.Sprintf("%s: %v", name, err))
				return
			}
			sw.Store(b)
			r.log.Warn("TEST HOOK: corruption switched", "what", name, "on", b)
		}
	} else if req.Method != http.MethodGet {
		textError(w, http.StatusMethodNotAllowed, "GET or POST")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = fmt.Fprintf(w, "certificates=%t query_signatures=%t\n", r.corruptCerts.Load(), r.corruptQuerySigs.Load())
}

// stopControl: POST /stop?canister=<id> and POST /start?canister=<id> (SetStopped). TEST ONLY.
func (r *Replica) stopControl(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		textError(w, http.StatusMethodNotAllowed, "POST")
		return
	}
	id, err := principal.Decode(req.URL.Query().Get("canister"))
	if err != nil {
		textError(w, http.StatusBadRequest, fmt.Sprintf("canister: %v", err))
		return
	}
	stop := req.URL.Path == "/stop"
	if err := r.SetStopped(id, stop); err != nil {
		textError(w, http.StatusNotFound, err.Error())
		return
	}
	r.log.Warn("TEST HOOK: canister status switched", "canister", id.Encode(), "stopped", stop)
	w.WriteHeader(http.StatusNoContent)
}

// canisterSignature: POST /canister-signature?canister=<id>&seed=<hex> with the payload (domain
// separator included) as body answers {"public_key": <hex DER>, "signature": <hex>}, the
// signature of CanisterSigner(canister, seed), so that agents in other languages can sign in as
// an Internet Identity user of the simulated network. TEST ONLY.
func (r *Replica) canisterSignature(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		textError(w, http.StatusMethodNotAllowed, "POST")
		return
	}
	canister, err := principal.Decode(req.URL.Query().Get("canister"))
	if err != nil {
		textError(w, http.StatusBadRequest, fmt.Sprintf("canister: %v", err))
		return
	}
	seed, err := hex.DecodeString(req.URL.Query().Get("seed"))
	if err != nil {
		textError(w, http.StatusBadRequest, fmt.Sprintf("seed: %v", err))
		return
	}
	payload, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	if err != nil {
		textError(w, http.StatusBadRequest, fmt.Sprintf("payload: %v", err))
		return
	}
	signer := r.CanisterSigner(canister, seed)
	sig := signer.Sign(payload)
	if sig == nil {
		textError(w, http.StatusInternalServerError, "canister signature failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"public_key": hex.EncodeToString(signer.PublicKey()), "signature": hex.EncodeToString(sig)})
}

// SetCorruption is the Go form of the TEST-ONLY corruption switches.
func (r *Replica) SetCorruption(certificates, querySignatures bool) {
	r.corruptCerts.Store(certificates)
	r.corruptQuerySigs.Store(querySignatures)
}
