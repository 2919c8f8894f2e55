const name = "computed";
export const meta = { name, description: "meta must be a pure literal" };

export default await agent("never reached");
