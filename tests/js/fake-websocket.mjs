// A fake WebSocket class for the client's unit tests: no sockets. Each
// test makes its own class (makeFakeWebSocket) so that the list of
// created sockets is not shared between tests. The test plays the server
// with the accept/serverSend/serverClose helpers.

export function makeFakeWebSocket() {
  const sockets = [];

  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = FakeWebSocket.CONNECTING;
      this.sent = [];
      this.closedBy = null; // {code, reason} when the client called close()
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }

    send(text) {
      if (this.readyState !== FakeWebSocket.OPEN) {
        throw new Error('send() on a socket that is not open');
      }
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedBy = { code, reason };
      this.readyState = FakeWebSocket.CLOSED;
    }

    // ---- the server's side ----

    serverOpen() {
      this.readyState = FakeWebSocket.OPEN;
      if (this.onopen) this.onopen({ type: 'open' });
    }

    serverSend(msg) {
      const data = typeof msg === 'string' ? msg : JSON.stringify(msg);
      if (this.onmessage) this.onmessage({ type: 'message', data });
    }

    // Handshake done and the first ping answered: the client is connected.
    accept() {
      this.serverOpen();
      this.serverSend({ type: 'pong', timestamp: new Date().toISOString() });
    }

    serverClose(code = 1006, reason = '') {
      this.readyState = FakeWebSocket.CLOSED;
      if (this.onerror && code === 1006) this.onerror({ type: 'error' });
      if (this.onclose) this.onclose({ type: 'close', code, reason, wasClean: code !== 1006 });
    }

    sentOfType(type) {
      return this.sent.filter((m) => m.type === type);
    }

    get query() {
      return new URL(this.url).searchParams;
    }
  }

  return { FakeWebSocket, sockets };
}
