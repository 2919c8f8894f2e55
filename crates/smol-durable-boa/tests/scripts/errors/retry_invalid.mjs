// expect: agent option retry must be {maxAttempts >= 1, backoffMs >= 0}, got
// calls: 0
export const meta = { name: "error", description: "Meets one error message" };
export default await agent("again", { retry: { maxAttempts: 0, backoffMs: 1 } });
