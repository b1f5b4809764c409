package dps

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/mqtt"
)

// run sends the register request and follows the operation to its end
// (reference §1.5 "Flow"): 202 and "assigning" mean wait retry-after and
// poll; 429 means wait and send the same request again; "assigned" is the
// result; "failed", "disabled" and error statuses end it.
func (s *session) run(registerBody []byte) (*Result, error) {
	op, prefix, suffix, body := OpRegister, registerTopic, "", registerBody
	throttled := 0
	for {
		m, rt, err := s.request(op, prefix, suffix, body)
		if err != nil {
			return nil, err
		}
		if rt.status == 429 {
			throttled++
			e := s.serviceError(op, rt, m.payload)
			if throttled > maxThrottled {
				return nil, e
			}
			wait := s.pace.delay(s.c.opts.Now(), throttleWait(rt, throttled))
			s.log.Info("DPS is throttling; waiting before asking again",
				zap.String("op", op), zap.Duration("wait", wait), zap.Int("throttled", throttled), zap.Int("code", e.Code))
			if err := s.sleep(wait, func(d time.Duration) error { e.Wait = d; return e }); err != nil {
				return nil, err
			}
			continue
		}
		throttled = 0
		if rt.status >= 300 {
			return nil, s.serviceError(op, rt, m.payload)
		}
		if rt.status < 200 {
			return nil, &Error{Kind: KindProtocol, Op: op, Status: rt.status, Message: "an informational status is not an answer"}
		}
		st, err := parseOperationStatus(m.payload)
		if err != nil {
			return nil, &Error{Kind: KindProtocol, Op: op, Status: rt.status, Err: err}
		}
		switch {
		case st.Status == statusAssigned:
			res, err := st.result(s.c.opts.RegistrationID)
			if err != nil {
				return nil, &Error{Kind: KindProtocol, Op: op, Status: rt.status, Err: err}
			}
			return res, nil
		case st.Status == StateFailed || st.Status == StateDisabled:
			return nil, terminalError(op, rt, st)
		case st.Status == statusAssigning || st.Status == statusUnassigned || rt.status == 202:
			// Still in progress; a 202 with a status this client does not
			// know is taken the same way, since 202 says so already.
		default:
			return nil, &Error{Kind: KindProtocol, Op: op, Status: rt.status,
				Message: fmt.Sprintf("unknown registration status %q", cleanText(st.Status))}
		}
		if st.OperationID == "" {
			return nil, &Error{Kind: KindProtocol, Op: op, Status: rt.status, Message: "the in-progress answer has no operationId to poll"}
		}
		wait := s.pace.delay(s.c.opts.Now(), pollWait(rt))
		s.log.Debug("registration in progress; waiting before polling",
			zap.String("operation_id", st.OperationID), zap.String("status", cleanText(st.Status)),
			zap.Duration("wait", wait), zap.Bool("retry_after_given", rt.hasRetryAfter))
		if err := s.sleep(wait, func(d time.Duration) error {
			return &Error{Kind: KindTimeout, Op: OpPoll, Wait: d,
				Message: fmt.Sprintf("DPS asked to wait %s before polling, longer than the time left for this registration", d)}
		}); err != nil {
			return nil, err
		}
		op, prefix, suffix, body = OpPoll, pollTopic, "&operationId="+mqtt.Escape(st.OperationID), []byte{}
	}
}

// serviceError reads an error answer. The body adds DPS's code, message and
// tracking ID; when it is unreadable the topic status still classifies it.
func (s *session) serviceError(op string, rt responseTopic, body []byte) *Error {
	e := &Error{Kind: KindService, Op: op, Status: rt.status}
	if rt.hasRetryAfter {
		e.Wait = rt.retryAfter
	}
	eb, err := parseErrorBody(body)
	if err != nil {
		s.log.Warn("DPS sent an error body that is not readable", zap.Int("status", rt.status), zap.Error(err))
		e.Message = "(the error body was not readable)"
		return e
	}
	e.Code, e.TrackingID, e.Message = eb.ErrorCode, cleanText(eb.TrackingID), cleanText(eb.Message)
	return e
}

// terminalError is a registration DPS ended as failed or disabled, with the
// reason from registrationState.
func terminalError(op string, rt responseTopic, st operationStatus) *Error {
	e := &Error{Kind: KindService, Op: op, Status: rt.status, State: st.Status}
	if rs := st.RegistrationState; rs != nil {
		e.Code, e.Message = rs.ErrorCode, cleanText(rs.ErrorMessage)
	}
	if rt.hasRetryAfter {
		e.Wait = rt.retryAfter
	}
	return e
}
