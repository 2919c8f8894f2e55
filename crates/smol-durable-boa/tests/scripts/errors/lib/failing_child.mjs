export const meta = { name: "failing child", description: "Gives up" };
throw new Error("the child gave up");
export default 1;
