// A bare DEALER for sending the worker frames the bridge itself would never send.
import { Dealer } from 'zeromq';
import { decodeFrame, encodeMessage } from '../../src/bridge/codec.js';

export type RawMessage = Record<string, unknown>;

export class RawClient {
  private readonly socket = new Dealer({ linger: 0, receiveTimeout: 20_000 });

  constructor(endpoint: string) {
    this.socket.connect(endpoint);
  }

  async sendFrame(frame: Uint8Array): Promise<void> {
    await this.socket.send(frame);
  }

  async send(message: unknown): Promise<void> {
    await this.sendFrame(encodeMessage(message as object));
  }

  /** The next message that is not a heartbeat. */
  async next(): Promise<RawMessage> {
    for (;;) {
      const [frame] = await this.socket.receive();
      const message = decodeFrame(frame as Buffer) as RawMessage;
      if (message.type !== 'heartbeat') return message;
    }
  }

  /** Sends `message` and returns the worker's answer. */
  async exchange(message: unknown): Promise<RawMessage> {
    await this.send(message);
    return this.next();
  }

  close(): void {
    this.socket.close();
  }
}
