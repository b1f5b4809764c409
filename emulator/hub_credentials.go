package emulator

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// The credential API (reference §2.3): a device connected with X.509 and
// api-version >= 2025-08-01-preview publishes
// $iothub/credentials/POST/issueCertificate/?$rid={rid} with
// {"id","csr","replace"?}; the hub answers 202 {correlationId,
// operationExpires} at once and, after Certificates.CredentialAPIDelay, 200
// with the issued chain, both at QoS 0 on $iothub/credentials/res/{status}/
// ?$rid={rid}. The 200 goes to the device's connection of that moment, if it
// is subscribed then; otherwise it is lost, as the C# SDK's service tests
// found.

// hubCredentialOpLifetime is how long an operation stays claimable, the
// operationExpires of the 202. The SDK samples keep their subscription "up
// to 12 hours"; an hour covers the emulator's delays with room to spare.
const hubCredentialOpLifetime = time.Hour

// hubCredentialRIDPattern: 4 to 36 ASCII letters, digits and '-', not starting
// or ending with '-' (reference §2.3 "requestId rules"); a GUID fits.
var hubCredentialRIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{2,34}[A-Za-z0-9]$`)

// hubCredentialOp is a device's active issueCertificate operation. It lives in
// the hub, not the session, so a reconnected device still gets its answer.
type hubCredentialOp struct {
	deviceID      string
	rid           string // decoded, compared with replace
	rawRID        string // as sent, echoed in the answer's topic
	correlationID string
	expires       time.Time
	csr           *x509.CertificateRequest
	fault         *Fault // malformed_json, hostile, wrong_key, expired, wrong_cn
	cancel        context.CancelFunc
	ctx           context.Context
}

// hubCredentialAccepted is the 202 body and hubCredentialResult the 200 body
// in its object form, their fields in the order of Microsoft's service test
// log (reference §2.3): correlationId first. Structs, not maps: a map would
// put certificates before correlationId.
type hubCredentialAccepted struct {
	CorrelationID    string `json:"correlationId"`
	OperationExpires string `json:"operationExpires"`
}

type hubCredentialResult struct {
	CorrelationID string   `json:"correlationId"`
	Certificates  []string `json:"certificates"`
}

// hubCredentialRequest is the request body. Pointers tell an absent field from
// an empty one.
type hubCredentialRequest struct {
	ID      *string `json:"id"`
	CSR     *string `json:"csr"`
	Replace *string `json:"replace"`
}

// issueCertificate serves a credential API request. Requests that cannot be
// answered (no $rid, no subscription to the response topic) are dropped, as
// the service does; the others are answered, with an error if need be.
func (s *hubSession) issueCertificate(req hubRequest, payload []byte) error {
	rid, rawRID, ok := req.query.get("$rid")
	log := s.log.With(zap.String("rid", rid))
	switch {
	case !ok || rid == "":
		log.Info("credential request without $rid: no answer")
		return nil
	case !s.subscribed(hubFilterCredentials):
		log.Info("credential request gets no answer: the device is not subscribed to " + hubFilterCredentials)
		return nil
	}
	if herr := s.credentialPrerequisites(rid); herr != nil {
		log.Info("credential request refused", zap.Error(herr))
		s.sendCredential(herr.status(), rawRID, herr.body(s.h.e.now()))
		return nil
	}
	var fault *Fault
	if f, ok := s.h.e.faults.Match(EndpointCredentialAPI, s.deviceID, OpIssue); ok {
		log.Info("injected fault on credential request", zap.Int("fault", f.ID), zap.String("action", f.Action))
		switch f.Action {
		case ActionDrop:
			return fmt.Errorf("injected fault %d: connection dropped on issueCertificate", f.ID)
		case ActionThrottle, ActionError:
			herr := hubFaultError(f, hubErrCredentialThrottled)
			s.sendCredential(herr.status(), rawRID, herr.body(s.h.e.now()))
			return nil
		case ActionDelay:
			body := bytes.Clone(payload)
			s.h.background(func() {
				if s.h.sleep(s.ctx, f.DelayDuration()) {
					s.startCredentialOp(rid, rawRID, body, nil)
				}
			})
			return nil
		}
		fault = &f
	}
	s.startCredentialOp(rid, rawRID, payload, fault)
	return nil
}

// credentialPrerequisites checks what the request's content does not
// decide: the request ID's form, the API version, the authentication.
func (s *hubSession) credentialPrerequisites(rid string) *hubError {
	switch {
	case !hubCredentialRIDPattern.MatchString(rid):
		return newHubError(hubErrArgumentInvalid, "request ID %q: use 4 to 36 letters, digits and '-', not starting or ending with '-' (a GUID fits)", rid)
	case !hubAPIVersionAtLeast(s.id.username.APIVersion, hubCredentialAPIVersion):
		return newHubError(hubErrInvalidProtocolVersion, "issueCertificate needs api-version %s or later; this connection uses %q", hubCredentialAPIVersion, s.id.username.APIVersion)
	case s.id.authMethod != hubAuthX509:
		return newHubError(hubErrUnauthorized, "issueCertificate is for devices connected with an X.509 certificate; this one used %s", s.id.authMethod)
	}
	return nil
}

// startCredentialOp validates the request and starts the operation,
// answering 202, or answers the error.
func (s *hubSession) startCredentialOp(rid, rawRID string, payload []byte, fault *Fault) {
	op, herr := s.beginCredentialOp(rid, rawRID, payload, fault)
	if herr != nil {
		s.log.Info("credential request refused", zap.String("rid", rid), zap.Error(herr))
		s.sendCredential(herr.status(), rawRID, herr.body(s.h.e.now()))
		return
	}
	body, _ := json.Marshal(hubCredentialAccepted{
		CorrelationID:    op.correlationID,
		OperationExpires: op.expires.UTC().Format(time.RFC3339),
	})
	s.sendCredential(202, rawRID, body)
}

// beginCredentialOp applies the request rules in the order the service
// reports them: the body's form (400006, 400004), the operation in progress
// (409, 412), then the CSR itself (400040).
func (s *hubSession) beginCredentialOp(rid, rawRID string, payload []byte, fault *Fault) (*hubCredentialOp, *hubError) {
	body, herr := s.decodeCredentialRequest(payload)
	if herr != nil {
		return nil, herr
	}
	der, err := pki.DecodeCSRField(*body.CSR)
	if err != nil {
		return nil, newHubError(hubErrArgumentInvalid, "csr: %v", err)
	}
	h := s.h
	h.mu.Lock()
	herr = h.credentialConflict(h.credentialOps[s.key], body.Replace)
	h.mu.Unlock()
	if herr != nil {
		return nil, herr
	}
	csr, err := pki.CheckCSR(der, s.deviceID, h.e.keyPolicy)
	if err != nil {
		return nil, csrRefused(err)
	}
	op := &hubCredentialOp{
		deviceID: s.deviceID, rid: rid, rawRID: rawRID,
		correlationID: hubGUID(),
		expires:       h.e.now().Add(hubCredentialOpLifetime),
		csr:           csr,
		fault:         fault,
	}
	op.ctx, op.cancel = context.WithCancel(h.ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	// Checked again: a delayed request may have started an operation while
	// this one's CSR was being verified.
	prev := h.credentialOps[s.key]
	if herr := h.credentialConflict(prev, body.Replace); herr != nil {
		op.cancel()
		return nil, herr
	}
	if h.closed {
		op.cancel()
		return nil, newHubError(503001, "the emulator is shutting down")
	}
	if prev != nil {
		prev.cancel()
		s.log.Info("credential operation replaced", zap.String("replaced_rid", prev.rid), zap.String("rid", rid))
	}
	h.credentialOps[s.key] = op
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		h.completeCredentialOp(s.key, op)
	}()
	s.log.Info("credential operation started", zap.String("rid", rid), zap.String("correlation_id", op.correlationID),
		logDate("operation_expires", op.expires), zap.Duration("answer_in", time.Duration(h.e.cfg.Certificates.CredentialAPIDelay)))
	return op, nil
}

// decodeCredentialRequest reads {"id","csr","replace"?}: malformed JSON is
// 400006; unknown fields, a missing or foreign id, a missing csr or a replace
// that is neither "*" nor a request ID are 400004.
func (s *hubSession) decodeCredentialRequest(payload []byte) (hubCredentialRequest, *hubError) {
	var body hubCredentialRequest
	if !json.Valid(payload) {
		return body, newHubError(hubErrFormat, "the request body is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return body, newHubError(hubErrArgumentInvalid, "request body: %v (want {\"id\",\"csr\",\"replace\"})", err)
	}
	switch {
	case body.ID == nil || *body.ID == "":
		return body, newHubError(hubErrArgumentInvalid, "id is required: the device ID")
	case *body.ID != s.deviceID:
		return body, newHubError(hubErrArgumentInvalid, "id %q is not the connected device %q", *body.ID, s.deviceID)
	case body.CSR == nil || *body.CSR == "":
		return body, newHubError(hubErrArgumentInvalid, "csr is required: a base64 DER PKCS#10 request")
	case body.Replace != nil && *body.Replace != "*" && !hubCredentialRIDPattern.MatchString(*body.Replace):
		return body, newHubError(hubErrArgumentInvalid, "replace %q: give \"*\" or the request ID of the pending request", *body.Replace)
	}
	return body, nil
}

// csrRefused is the 400040 answer to a CSR that cannot be decoded, verified
// or accepted. As azure-sdk-for-c's tests show it, the error's name and
// detail travel in info.credentialError and info.credentialMessage, where the
// SDK's parser reads them (reference §2.3 "Errors").
func csrRefused(err error) *hubError {
	herr := newHubError(hubErrCSRDecode, "FailedToDecodeCsr: %v", err)
	herr.info = map[string]any{"credentialError": "FailedToDecodeCsr", "credentialMessage": err.Error()}
	return herr
}

// credentialConflict applies "one active operation per device": a second
// request needs replace, "*" or the pending request's ID; a replace that
// names no pending request fails its precondition.
func (h *hub) credentialConflict(cur *hubCredentialOp, replace *string) *hubError {
	switch {
	case cur == nil && replace != nil && *replace != "*":
		return newHubError(hubErrPreconditionFailed, "no pending request %q to replace", *replace)
	case cur == nil:
		return nil
	case replace == nil:
		herr := newHubError(h.conflictCode, "request %q is still in progress; send replace:\"*\" or replace:%q to start over", cur.rid, cur.rid)
		herr.info = map[string]any{
			"requestId":        cur.rid,
			"correlationId":    cur.correlationID,
			"operationExpires": cur.expires.UTC().Format(time.RFC3339),
		}
		return herr
	case *replace != "*" && *replace != cur.rid:
		return newHubError(hubErrPreconditionFailed, "replace %q does not match the pending request %q", *replace, cur.rid)
	}
	return nil
}

// completeCredentialOp waits out the configured delay, issues the
// certificate and delivers it, unless the operation was replaced or the
// emulator closes first.
func (h *hub) completeCredentialOp(key string, op *hubCredentialOp) {
	defer op.cancel()
	if !h.sleep(op.ctx, time.Duration(h.e.cfg.Certificates.CredentialAPIDelay)) {
		return
	}
	h.mu.Lock()
	if h.credentialOps[key] != op {
		h.mu.Unlock()
		return
	}
	delete(h.credentialOps, key)
	h.mu.Unlock()
	log := h.log.With(zap.String("device_id", op.deviceID), zap.String("rid", op.rid), zap.String("correlation_id", op.correlationID))

	status, body := 200, []byte(nil)
	chain, err := h.issueForOp(op)
	if err != nil {
		log.Error("credential operation failed to issue", zap.Error(err))
		herr := newHubError(500001, "issuing the certificate failed: %v", err)
		herr.info = map[string]any{"correlationId": op.correlationID, "requestId": op.rid}
		status, body = herr.status(), herr.body(h.e.now())
	} else {
		body = h.credentialResult(op, chain)
		leaf, _ := x509.ParseCertificate(chain[0])
		if _, err := h.e.state.updateDevice(key, func(d *Device) {
			d.Issued, d.Revoked = true, false
			if leaf != nil {
				d.Certificate = NewCertificateInfo(leaf)
			}
		}); err != nil {
			// The certificate is good until a restart, which may forget
			// that the device has one: say so, and deliver it anyway.
			log.Error("certificate issued but the device registry not saved", zap.Error(err))
		}
		if leaf != nil {
			log.Info("certificate issued through the credential API", zap.String("serial", NewCertificateInfo(leaf).Serial),
				zap.String("subject", leaf.Subject.String()), logDate("not_after", leaf.NotAfter))
		}
	}
	s := h.session(op.deviceID)
	if s == nil || !s.subscribed(hubFilterCredentials) {
		log.Info("credential answer lost: the device is not connected and subscribed to "+hubFilterCredentials+" now", zap.Int("status", status))
		return
	}
	s.sendCredential(status, op.rawRID, body)
}

// issueForOp issues the chain for the operation's CSR, or the broken chain
// an injected fault asks for.
func (h *hub) issueForOp(op *hubCredentialOp) ([][]byte, error) {
	opts := pki.IssueOptions{DeviceID: op.deviceID, Lifetime: time.Duration(h.e.cfg.Certificates.Lifetime)}
	csr := op.csr
	if op.fault != nil {
		switch op.fault.Action {
		case ActionWrongKey:
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, fmt.Errorf("wrong_key fault: %w", err)
			}
			csr = &x509.CertificateRequest{PublicKey: key.Public()}
		case ActionExpired:
			opts.NotBefore = h.e.now().Add(-opts.Lifetime - time.Hour)
		case ActionWrongCN:
			opts.DeviceID = op.deviceID + "-wrong-cn"
		}
	}
	chain, err := h.e.deviceCA.Issue(csr, opts)
	if err != nil {
		return nil, fmt.Errorf("issue for %q: %w", op.deviceID, err)
	}
	return chain, nil
}

// credentialResult is the 200 body: {"correlationId","certificates":[…]}
// as the C# and C SDKs read it, or a bare array as azure-sdk-for-c's preview
// parses it (Certificates.CredentialAPIBody, reference §2.3 "Conflict").
func (h *hub) credentialResult(op *hubCredentialOp, chain [][]byte) []byte {
	if op.fault != nil {
		switch op.fault.Action {
		case ActionMalformedJSON:
			return hubMalformedJSON()
		case ActionHostile:
			return hubHostileJSON()
		}
	}
	certs := make([]string, len(chain))
	for i, der := range chain {
		certs[i] = base64.StdEncoding.EncodeToString(der)
	}
	var v any = hubCredentialResult{CorrelationID: op.correlationID, Certificates: certs}
	if h.e.cfg.Certificates.CredentialAPIBody == "array" {
		v = certs
	}
	out, _ := json.Marshal(v)
	return out
}

// sendCredential publishes an answer at QoS 0 (reference §2.3: "the service
// publishes responses at QoS 0").
func (s *hubSession) sendCredential(status int, rawRID string, body []byte) {
	topic := "$iothub/credentials/res/" + strconv.Itoa(status) + "/?$rid=" + rawRID
	if _, err := s.conn.Publish(topic, body, 0); err != nil {
		s.log.Info("credential answer not delivered", zap.String("topic", topic), zap.Error(err))
		return
	}
	s.log.Info("credential request answered", zap.String("topic", topic))
}
