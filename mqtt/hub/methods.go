package hub

import (
	"context"
	"encoding/json"
	"time"

	"go.uber.org/zap"
)

// maxConcurrentMethods bounds the method handlers running at once; beyond
// it the hub is answered 429 at once rather than piling up goroutines.
const maxConcurrentMethods = 16

// methodAnswerTimeout bounds sending a method's answer; the hub gives up on
// its side anyway (5 to 300 s).
const methodAnswerTimeout = 10 * time.Second

// methodCall runs OnMethod for a direct method request on its own
// goroutine and answers on the connection the request came on: the hub
// matches the answer to the request per connection.
func (c *Client) methodCall(cn *connection, topic string, payload []byte) {
	mt, err := parseMethodTopic(topic)
	if err != nil {
		// Without a usable $rid there is nothing to answer to.
		c.log.Warn("dropped a direct method call with a malformed topic", zap.Error(err))
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		select {
		case c.methodSlots <- struct{}{}:
			defer func() { <-c.methodSlots }()
		default:
			c.log.Warn("too many direct methods at once; answering 429", zap.String("method", mt.name))
			c.answerMethod(cn, mt, 429, []byte(`{"message":"the device is busy with other direct methods; retry later"}`))
			return
		}
		status, response := c.invokeMethod(mt.name, payload)
		c.answerMethod(cn, mt, status, response)
	}()
}

// invokeMethod calls OnMethod and checks what it returns, so a handler's
// mistake becomes a clear error for the caller instead of an answer the hub
// cannot relay.
func (c *Client) invokeMethod(name string, payload []byte) (int, []byte) {
	log := c.log.With(zap.String("method", name))
	switch {
	case c.opts.OnMethod == nil:
		log.Info("direct method called, but the session has no method handler; answering 501")
		return 501, []byte(`{"message":"this device does not implement direct methods"}`)
	case len(payload) > maxBody:
		log.Warn("direct method payload too large; answering 413", zap.Int("bytes", len(payload)))
		return 413, []byte(`{"message":"payload too large"}`)
	}
	status, response := c.opts.OnMethod(c.life, name, payload)
	if len(response) > 0 && !json.Valid(response) {
		log.Error("the method handler answered with a body that is not JSON; answering 500 instead", zap.Int("status", status))
		return 500, []byte(`{"message":"the device's method handler returned a response that is not JSON"}`)
	}
	if status < 100 || status > 999 {
		log.Error("the method handler answered with an invalid status; answering 500 instead", zap.Int("status", status))
		return 500, []byte(`{"message":"the device's method handler returned an invalid status"}`)
	}
	log.Info("direct method answered", zap.Int("status", status))
	return status, response
}

// answerMethod publishes a method's answer on cn; once cn is gone the
// caller has already been told the device timed out, so the answer is
// dropped.
func (c *Client) answerMethod(cn *connection, mt methodTopic, status int, response []byte) {
	ctx, cancel := context.WithTimeout(c.life, methodAnswerTimeout)
	defer cancel()
	tok := cn.client.Publish(methodResponseTopic(status, mt.rawRID), 0, false, response)
	if err := waitOn(ctx, cn, tok); err != nil {
		c.log.Warn("could not answer a direct method", zap.String("method", mt.name), zap.Error(err))
	}
}
