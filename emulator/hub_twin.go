package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"go.uber.org/zap"
)

// hubTwinAnswer is an answer on $iothub/twin/res/{status}/?$rid={rid}{query}.
type hubTwinAnswer struct {
	status int
	query  string // extra parameters, such as "&$version=3"
	body   []byte
}

// twinGet answers $iothub/twin/GET/?$rid={rid} with the whole twin,
// {"desired":{…,"$version":n},"reported":{…,"$version":n}} (reference §2.2).
// The request body is ignored: the Node.js SDK sends a single space. Without
// a $rid, or without a subscription to $iothub/twin/res/#, there is no one
// to answer.
func (s *hubSession) twinGet(req hubRequest) error {
	rid := s.twinResponseRID(req, "GET")
	if rid == "" {
		return nil
	}
	return s.twinRespond("GET", rid, func() hubTwinAnswer {
		var doc []byte
		if !s.h.e.state.WithDevice(s.key, func(d *Device) { doc = d.Twin.JSON() }) {
			return hubTwinAnswer{status: 404, body: newHubError(404001, "device %q no longer exists", s.deviceID).body(s.h.e.now())}
		}
		return hubTwinAnswer{status: 200, body: doc}
	})
}

// twinPatchReported merges a JSON merge patch into the reported properties,
// bumps their $version, and answers 204 with &$version={n}, or 400 for a body
// that is not a JSON object. The patch applies even when the device cannot
// receive the answer (no $rid, or not subscribed): the $rid only correlates.
func (s *hubSession) twinPatchReported(req hubRequest, payload []byte) error {
	rid := s.twinResponseRID(req, "PATCH reported")
	body := bytes.Clone(payload) // a delayed answer outlives the packet
	return s.twinRespond("PATCH reported", rid, func() hubTwinAnswer {
		patch, herr := hubDecodeReportedPatch(body)
		if herr != nil {
			s.log.Info("reported properties refused", zap.Error(herr))
			return hubTwinAnswer{status: herr.status(), body: herr.body(s.h.e.now())}
		}
		version := 0
		found, err := s.h.e.state.updateDevice(s.key, func(d *Device) {
			MergePatch(d.Twin.Reported, patch)
			d.Twin.ReportedVersion++
			version = d.Twin.ReportedVersion
		})
		switch {
		case !found:
			return hubTwinAnswer{status: 404, body: newHubError(404001, "device %q no longer exists", s.deviceID).body(s.h.e.now())}
		case err != nil:
			// The patch applied in memory; the device is told it may not
			// survive a restart, as IoT Hub tells it of an internal error.
			s.log.Error("reported properties updated but not saved", zap.Int("version", version), zap.Error(err))
			return hubTwinAnswer{status: 500, body: newHubError(500001, "reported properties $version %d could not be saved", version).body(s.h.e.now())}
		}
		s.log.Info("reported properties updated", zap.Int("version", version))
		return hubTwinAnswer{status: 204, query: "&$version=" + strconv.Itoa(version)}
	})
}

// twinResponseRID returns the $rid to answer on, as the device wrote it, or
// "" when the device cannot receive an answer.
func (s *hubSession) twinResponseRID(req hubRequest, what string) string {
	rid, raw, ok := req.query.get("$rid")
	switch {
	case !ok || rid == "":
		s.log.Info("twin request without $rid: it gets no answer", zap.String("request", what))
		return ""
	case !s.subscribed(hubFilterTwinResponses):
		s.log.Info("twin request gets no answer: the device is not subscribed to "+hubFilterTwinResponses,
			zap.String("request", what), zap.String("rid", rid))
		return ""
	}
	return raw
}

// twinRespond serves a twin request through the injected faults of OpTwin:
// drop closes the connection, throttle and error answer 429 or the fault's
// status instead of serving, delay serves later, malformed_json and hostile
// serve but replace the answer's body. rid "" serves without answering.
func (s *hubSession) twinRespond(what, rid string, serve func() hubTwinAnswer) error {
	f, faulted := s.h.e.faults.Match(EndpointHub, s.deviceID, OpTwin)
	if faulted {
		s.log.Info("injected fault on twin request", zap.String("request", what), zap.Int("fault", f.ID), zap.String("action", f.Action))
		switch f.Action {
		case ActionDrop:
			return fmt.Errorf("injected fault %d: connection dropped on twin %s", f.ID, what)
		case ActionThrottle, ActionError:
			herr := hubFaultError(f, hubErrTwinThrottled)
			s.sendTwin(rid, hubTwinAnswer{status: herr.status(), body: herr.body(s.h.e.now())})
			return nil
		case ActionDelay:
			s.h.background(func() {
				if s.h.sleep(s.ctx, f.DelayDuration()) {
					s.sendTwin(rid, serve())
				}
			})
			return nil
		}
	}
	a := serve()
	switch {
	case faulted && f.Action == ActionMalformedJSON:
		a.body = hubMalformedJSON()
	case faulted && f.Action == ActionHostile:
		a.body = hubHostileJSON()
	}
	s.sendTwin(rid, a)
	return nil
}

// sendTwin publishes a twin answer at QoS 0, as IoT Hub does on its response
// topics (the SDKs subscribe to them at QoS 0).
func (s *hubSession) sendTwin(rid string, a hubTwinAnswer) {
	if rid == "" {
		return
	}
	topic := "$iothub/twin/res/" + strconv.Itoa(a.status) + "/?$rid=" + rid + a.query
	if _, err := s.conn.Publish(topic, a.body, 0); err != nil {
		s.log.Info("twin answer not delivered", zap.String("topic", topic), zap.Error(err))
		return
	}
	s.log.Info("twin request answered", zap.String("topic", topic))
}

// hubDecodeReportedPatch reads a reported-properties patch: one JSON object.
// Numbers stay json.Number, so large integers come back exactly as sent.
func hubDecodeReportedPatch(body []byte) (map[string]any, *hubError) {
	if !json.Valid(body) {
		return nil, newHubError(hubErrFormat, "the reported properties patch is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, newHubError(hubErrFormat, "the reported properties patch is not valid JSON: %v", err)
	}
	patch, ok := v.(map[string]any)
	if !ok {
		return nil, newHubError(hubErrArgumentInvalid, "the reported properties patch must be a JSON object")
	}
	return patch, nil
}
