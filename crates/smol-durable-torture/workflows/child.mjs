// A child workflow: two calls.
export const meta = { name: "child", description: "two calls for a parent" };

const first = await agent(`child ${args.n} first`);
const second = await agent(`child ${args.n} second after ${first.length}`);
export default { n: args.n, first, second };
