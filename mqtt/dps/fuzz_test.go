package dps

import (
	"errors"
	"testing"
)

func FuzzParseResponseTopic(f *testing.F) {
	for _, s := range []string{
		"$dps/registrations/res/202/?$rid=1&retry-after=3",
		"$dps/registrations/res/200/?retry-after=x&$rid=abc",
		"$dps/registrations/res/429/?$rid=1&$rid=2",
		"$dps/registrations/res/2000/?$rid=1",
		"$dps/registrations/res//?",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		rt, err := parseResponseTopic(topic)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if rt.status < 100 || rt.status > 999 || rt.rid == "" || rt.retryAfter < 0 {
			t.Fatalf("accepted %+v", rt)
		}
		if rt.hasRetryAfter && rt.badRetryAfter != "" {
			t.Fatalf("retry-after both valid and bad: %+v", rt)
		}
	})
}

func FuzzParseBody(f *testing.F) {
	for _, s := range []string{
		`{"operationId":"op","status":"assigning"}`,
		assignedBody("leaf", "root"),
		`{"operationId":"op","status":"failed","registrationState":{"errorCode":400209,"errorMessage":"x"}}`,
		`{"errorCode":401002,"trackingId":"t","message":"m","info":{}}`,
		`{"registrationState":{"issuedCertificateChain":["***"]}}`,
		`[[[[[[[[[[]]]]]]]]]]`,
		`{"a":` + "1e999999" + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := parseOperationStatus(body)
		if err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("error %v does not wrap errMalformed", err)
		}
		if err == nil && st.Status == statusAssigned {
			res, err := st.result(testRegID)
			if err != nil && !errors.Is(err, errMalformed) {
				t.Fatalf("result error %v does not wrap errMalformed", err)
			}
			if err == nil && (res.AssignedHub == "" || res.DeviceID == "" || len(res.IssuedCertificateChain) > maxChainLength) {
				t.Fatalf("accepted an unusable result %+v", res)
			}
		}
		if err == nil {
			e := terminalError(OpPoll, responseTopic{status: 200}, st)
			if len(e.Message) > maxMessageLen+3 {
				t.Fatalf("message of %d bytes kept", len(e.Message))
			}
		}
		eb, err := parseErrorBody(body)
		if err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("error body error %v does not wrap errMalformed", err)
		}
		e := &Error{Kind: KindService, Op: OpRegister, Status: 400, Code: eb.ErrorCode, Message: cleanText(eb.Message), TrackingID: cleanText(eb.TrackingID)}
		_ = e.Error()
		_ = e.Retryable()
		_ = e.Hint()
	})
}
