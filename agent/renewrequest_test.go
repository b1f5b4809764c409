package agent

import (
	"errors"
	"testing"
	"time"
)

func (h *harness) setDesiredRequest(id string) {
	h.hub.mu.Lock()
	defer h.hub.mu.Unlock()
	h.hub.desired = map[string]any{"dpsAgent": map[string]any{"renewRequestId": id}}
}

// reportedRequest is reported.dpsAgent.renewRequestId as the twin holds it.
func (h *harness) reportedRequest() (string, bool) {
	h.hub.mu.Lock()
	defer h.hub.mu.Unlock()
	return twinAgentProp(h.hub.twin, "renewRequestId")
}

func (h *harness) waitReportedRequest(t *testing.T, want string) {
	t.Helper()
	waitFor(t, "reported renewRequestId "+want, func() bool {
		got, ok := h.reportedRequest()
		return ok && got == want
	})
}

// provisionOnce runs the agent until it is connected and has reported that
// it handled no request, then stops it.
func (h *harness) provisionOnce(t *testing.T) {
	t.Helper()
	_, stop := h.run(t)
	h.waitConnected(t)
	h.waitReportedRequest(t, "")
	stop()
}

// noRenewal checks, for a while, that the hub issues nothing.
func (h *harness) noRenewal(t *testing.T, why string) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if n := h.issuedByHub(); n != 0 {
		t.Errorf("%d renewals; want none: %s", n, why)
	}
}

// A request made while the device was off is acted on when it comes back,
// reported as handled once the new certificate is in use, and not acted on
// again after another restart.
func TestTwinRequestMadeWhileAwayIsHandledOnce(t *testing.T) {
	h := newHarness(t)
	h.provisionOnce(t)

	h.setDesiredRequest("rotate-2026-12")
	a, stop := h.run(t)
	waitFor(t, "the requested renewal", func() bool { return h.issuedByHub() == 1 })
	h.waitReportedRequest(t, "rotate-2026-12")
	lr := a.Status().LastRenewal
	stop()
	if lr == nil || lr.Result != "success" {
		t.Errorf("last renewal %+v, want a success", lr)
	}

	_, stop = h.run(t)
	h.waitConnected(t)
	time.Sleep(300 * time.Millisecond)
	stop()
	if n := h.issuedByHub(); n != 1 {
		t.Errorf("%d renewals after a restart with the request handled, want still 1", n)
	}
}

// A certificate DPS issued in this run is newer than any request already in
// the twin: the request is recorded as handled, not renewed for.
func TestTwinRequestOlderThanAFreshCertificate(t *testing.T) {
	h := newHarness(t)
	h.setDesiredRequest("rotate-2026-11")
	_, stop := h.run(t)
	h.waitConnected(t)
	h.waitReportedRequest(t, "rotate-2026-11")
	h.noRenewal(t, "the certificate was issued after the request")
	stop()
}

// An agent older than twin acknowledgements reported dpsAgent without
// renewRequestId, and acted on requests as they came: after the upgrade the
// standing request is recorded, and the fleet does not renew at once.
func TestTwinRequestAfterUpgradeFromAnOlderAgent(t *testing.T) {
	h := newHarness(t)
	h.provisionOnce(t)
	h.hub.mu.Lock()
	delete(h.hub.twin["dpsAgent"].(map[string]any), "renewRequestId")
	h.hub.mu.Unlock()

	h.setDesiredRequest("rotate-2026-10")
	_, stop := h.run(t)
	h.waitReportedRequest(t, "rotate-2026-10")
	h.noRenewal(t, "an older agent handled the request")
	stop()
}

// A request that arrives while connected is acted on once; the same value
// delivered again (a twin resync) is not a new request.
func TestTwinRequestWhileConnected(t *testing.T) {
	h := newHarness(t)
	_, stop := h.run(t)
	target := h.waitConnected(t)
	h.waitReportedRequest(t, "")

	patch := map[string]any{"dpsAgent": map[string]any{"renewRequestId": "now-please"}, "$version": 2}
	target.OnDesired(patch, 2)
	waitFor(t, "the requested renewal", func() bool { return h.issuedByHub() == 1 })
	h.waitReportedRequest(t, "now-please")
	target.OnDesired(patch, 2)
	target.OnDesired(map[string]any{"other": 1}, 3)
	time.Sleep(300 * time.Millisecond)
	stop()
	if n := h.issuedByHub(); n != 1 {
		t.Errorf("%d renewals for one request, want 1", n)
	}
}

// A request whose renewal fails is not reported as handled; the agent tries
// again on the renewal backoff (the certificate itself is far from due) and
// reports it once a renewal succeeds.
func TestTwinRequestRetriedAfterAFailedRenewal(t *testing.T) {
	h := newHarness(t)
	h.provisionOnce(t)

	failing := func(on bool) {
		var hubErr error
		var dpsErrs []error
		if on {
			hubErr = refusal{retry: true}
			for range 100000 {
				dpsErrs = append(dpsErrs, refusal{retry: true})
			}
		}
		h.hub.mu.Lock()
		h.hub.issueErr = hubErr
		h.hub.mu.Unlock()
		h.dps.mu.Lock()
		h.dps.fail = dpsErrs
		h.dps.mu.Unlock()
	}
	failing(true)
	h.setDesiredRequest("after-a-failure")
	a, stop := h.run(t)
	defer stop()
	waitFor(t, "a failed renewal", func() bool {
		lr := a.Status().LastRenewal
		return lr != nil && lr.Result == "failure"
	})
	if got, _ := h.reportedRequest(); got == "after-a-failure" {
		t.Fatal("the request was reported as handled after a failed renewal")
	}
	failing(false)
	h.waitReportedRequest(t, "after-a-failure")
	if lr := a.Status().LastRenewal; lr == nil || lr.Result != "success" {
		t.Errorf("last renewal %+v, want the retry's success", lr)
	}
}

// Without the twin (the read failed), the agent neither renews nor reports
// a value it does not know, which would erase the record of what was handled.
func TestTwinRequestUnknownWhenTheTwinCannotBeRead(t *testing.T) {
	h := newHarness(t)
	h.provisionOnce(t)

	h.hub.mu.Lock()
	h.hub.twin["dpsAgent"].(map[string]any)["renewRequestId"] = "handled-before"
	h.hub.twinErr = errors.New("twin GET timed out")
	h.hub.mu.Unlock()
	h.setDesiredRequest("new-one")
	_, stop := h.run(t)
	target := h.waitConnected(t)
	// A resync delivers the desired section: still unknown, still nothing.
	target.OnDesired(map[string]any{"dpsAgent": map[string]any{"renewRequestId": "new-one"}}, 4)
	h.noRenewal(t, "the agent cannot tell whether the request is new")
	stop()
	if got, _ := h.reportedRequest(); got != "handled-before" {
		t.Errorf("reported renewRequestId %q, want the twin's %q kept", got, "handled-before")
	}
}
