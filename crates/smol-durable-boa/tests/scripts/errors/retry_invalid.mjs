// expect: agent retry.maxAttempts must be between 1 and 4294967295
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("again", { retry: { maxAttempts: 0, backoffMs: 1 } });
