/** Runs tasks one after another (never two syncs of one kind at once); a failed task does not stop later ones. */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>, onError: (error: unknown) => void): Promise<T> {
    const next = this.#tail.then(task);
    this.#tail = next.catch(onError);
    return next;
  }

  /** Resolves when every task queued so far has settled. */
  async idle(): Promise<void> {
    await this.#tail;
  }
}
