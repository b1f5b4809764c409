package agent

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// A renewal can be asked for through the device twin: the solution sets
// desired.dpsAgent.renewRequestId to a value the device has not handled, and
// the device renews once and reports the same value back in
// reported.dpsAgent.renewRequestId when a certificate issued after the
// request is in use. The twin is the record of what was handled, so a request
// made while the device was off is acted on when it comes back, a restart
// does not renew again for an old one, and the solution can see which
// devices have done it (desired and reported equal).
//
// Rules when a session starts (syncRenewRequest):
//   - desired empty or equal to reported: nothing to do;
//   - the identity was issued by DPS in this run: it is newer than any
//     request, so the request is recorded as handled without renewing;
//   - reported.dpsAgent exists without renewRequestId: an agent older than
//     this mechanism ran, and it acted on requests when they arrived, so the
//     request is recorded as handled (no fleet-wide renewal on upgrade);
//   - otherwise: renew, and report the value once the renewal succeeds.
//
// A request that arrives while connected (onDesired) is acted on when it is
// neither the handled nor the pending one.

// renewRequest is the state of twin renewal requests (under Agent.mu).
type renewRequest struct {
	known   bool   // handled is what the twin says (or a renewal made it so)
	handled string // the last request a certificate in use was issued after
	pending string // a request a renewal is under way for
}

// twinTimeout bounds the twin read when a session starts.
const twinTimeout = 30 * time.Second

// syncRenewRequest reads the twin as a session starts and acts on a request
// made while the device was away. It must run before the first report, which
// says what was handled.
func (a *Agent) syncRenewRequest(ctx context.Context, s *session, id *identity) {
	if id.leaf == nil {
		return // sas mode: there is no certificate to renew
	}
	ctx, cancel := context.WithTimeout(ctx, twinTimeout)
	defer cancel()
	desired, reported, _, _, err := s.GetTwin(ctx)
	if err != nil {
		// Not knowing what was handled, the agent neither renews nor reports
		// a value; the next session looks again.
		a.log.Warn("could not read the device twin; a renewal requested while the device was away waits for the next connection", zap.Error(err))
		return
	}
	want, _ := twinAgentProp(desired, "renewRequestId")
	had, hadKey := twinAgentProp(reported, "renewRequestId")
	_, olderAgent := reported["dpsAgent"].(map[string]any)
	olderAgent = olderAgent && !hadKey

	a.mu.Lock()
	r := &a.renewRequest
	r.known, r.handled = true, had
	act := false
	switch {
	case want == "" || want == had || want == r.pending:
	case id.fresh || olderAgent:
		r.handled = want
	default:
		r.pending, act = want, true
	}
	a.mu.Unlock()

	switch {
	case act:
		a.log.Info("renewal requested through the device twin while the device was away",
			zap.String("renew_request_id", want), zap.String("handled", had))
		a.Renew()
	case want != had && want != "":
		a.log.Info("twin renewal request recorded as handled: the certificate in use is newer or an older agent handled it",
			zap.String("renew_request_id", want))
	}
}

// onDesired watches desired-property updates for a new renewRequestId.
func (a *Agent) onDesired(patch map[string]any, version int) {
	id, ok := twinAgentProp(patch, "renewRequestId")
	if !ok || id == "" {
		return
	}
	a.mu.Lock()
	r := &a.renewRequest
	// Before the session's twin read the agent cannot tell a new request
	// from an old one; that read looks at this same value.
	act := r.known && id != r.handled && id != r.pending
	if act {
		r.pending = id
	}
	a.mu.Unlock()
	if !act {
		return
	}
	a.log.Info("renewal requested through the device twin", zap.String("renew_request_id", id), zap.Int("desired_version", version))
	a.Renew()
}

// renewedForRequest records, after a renewal succeeded, that the pending
// request (if any) is handled.
func (a *Agent) renewedForRequest() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := &a.renewRequest; r.pending != "" {
		r.handled, r.pending, r.known = r.pending, "", true
	}
}

// renewRequestPending says whether a twin request waits for a renewal.
func (a *Agent) renewRequestPending() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.renewRequest.pending != ""
}

// handledRenewRequest is what reported.dpsAgent.renewRequestId should say;
// ok is false while it is not known (reporting then would erase it).
func (a *Agent) handledRenewRequest() (id string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.renewRequest.handled, a.renewRequest.known
}

// twinAgentProp is the string dpsAgent.name of a twin section or patch.
func twinAgentProp(section map[string]any, name string) (string, bool) {
	props, _ := section["dpsAgent"].(map[string]any)
	v, ok := props[name]
	if !ok {
		return "", false
	}
	s, _ := v.(string)
	return s, true
}
