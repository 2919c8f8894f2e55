export const meta = { name: "hello", description: "Plain text agent calls with the debug provider" };

const first = await agent("Say hello");
const second = await agent("Second prompt", {});
const third = await agent("Third prompt, chained after: " + first);
export default { first, second, third, lengths: [first.length, second.length, third.length] };
